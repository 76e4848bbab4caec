// Following GET /v1/events (Server-Sent Events) with npm `eventsource`.
//
// Every event's `data:` is one Event (docs/openapi.json); its SSE `id:` is the
// event id. Save the id of the last event you processed and pass it back as
// `lastEventId` when you start again: the node replays every retained event
// after it (Last-Event-ID), then goes live, so nothing is missed or repeated.
// While running, `eventsource` reconnects by itself and sends the
// Last-Event-ID header of the last event it saw.
import { EventSource } from 'eventsource';
import { TipdApiError } from './errors.js';
import type { components } from './schema.js';

type TipdEvent = components['schemas']['Event'];
type EventType = components['schemas']['EventType'];

export interface FollowEventsOptions {
  baseUrl: string;
  token: string;
  // Resume after this id (the last one processed); omit for live events only.
  lastEventId?: string;
  // Only these types (the node filters); default all.
  types?: EventType[];
  onEvent: (event: TipdEvent) => void;
  // Connection errors (the stream reconnects by itself unless closed), and a
  // TipdApiError when the node ends the stream with `event: error` (its data
  // is an ApiError, e.g. TOKEN_REVOKED or TOKEN_EXPIRED: the token no longer
  // works, so do not reconnect with it).
  onError?: (error: Error) => void;
  // Each time the stream is (re)connected (HTTP 200).
  onOpen?: () => void;
  fetch?: typeof globalThis.fetch;
}

export interface EventSubscription {
  // The id of the last event delivered to onEvent ("" before the first).
  readonly lastEventId: string;
  close(): void;
}

export function followEvents(options: FollowEventsOptions): EventSubscription {
  const url = new URL(options.baseUrl.replace(/\/+$/, '') + '/v1/events');
  if (options.types?.length) url.searchParams.set('types', options.types.join(','));
  const baseFetch = options.fetch ?? globalThis.fetch;
  let last = options.lastEventId ?? '';
  const source = new EventSource(url, {
    fetch: (input, init) => {
      const headers = new Headers(init?.headers);
      headers.set('Authorization', `Bearer ${options.token}`);
      // eventsource sends Last-Event-ID itself once it has seen an id; the
      // first connection resumes from the caller's saved id.
      if (!headers.has('Last-Event-ID') && last !== '') headers.set('Last-Event-ID', last);
      return baseFetch(input, { ...init, headers });
    },
  });
  source.onopen = () => options.onOpen?.();
  // Every tipd event is named (`event: <type>`), so one listener per type.
  const handler = (message: MessageEvent<string>) => {
    const event = JSON.parse(message.data) as TipdEvent;
    last = message.lastEventId || event.id;
    options.onEvent(event);
  };
  const types: string[] = options.types?.length ? [...options.types] : ALL_TYPES;
  for (const type of types) source.addEventListener(type, handler);
  if (!types.includes('reset')) source.addEventListener('reset', handler);
  source.onerror = (e) => options.onError?.(new Error(`event stream: ${e.message ?? 'connection error'} (code ${e.code ?? '-'})`));
  // `event: error` from the node arrives as a MessageEvent named "error"
  // (connection errors are ErrorEvents, handled by onerror above).
  source.addEventListener('error', (e: Event) => {
    if (!(e instanceof MessageEvent) || typeof e.data !== 'string') return;
    let code = 'unknown';
    let message = e.data;
    try {
      const body = JSON.parse(e.data) as { code?: string; message?: string };
      code = body.code ?? code;
      message = body.message ?? message;
    } catch {
      // not JSON: reported as it came
    }
    source.close();
    options.onError?.(new TipdApiError(401, code, message));
  });
  return {
    get lastEventId() {
      return last;
    },
    close() {
      source.close();
    },
  };
}

// Every event type of docs/openapi.json (EventType); a stream without a
// filter listens to all of them.
const ALL_TYPES: string[] = [
  'tip_received',
  'tip_sent',
  'ack',
  'channel',
  'peer',
  'reset',
  'webhook_disabled',
  'tip_refunded',
  'stream_started',
  'stream_tip',
  'stream_stopped',
  'anomaly',
] satisfies EventType[];
