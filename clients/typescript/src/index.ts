// A typed client for the tipd HTTP/JSON API.
//
// The request and answer types come from src/schema.d.ts, which
// openapi-typescript generates from docs/openapi.json (`npm run generate`);
// openapi-fetch turns them into a typed `GET`/`POST`/`DELETE` per path. This
// file only adds the bearer token and small helpers; events.ts follows the
// SSE stream and webhooks.ts verifies webhook deliveries.
import createClient, { type Client, type Middleware } from 'openapi-fetch';
import type { components, paths } from './schema.js';

export type { components, paths } from './schema.js';
export type Schemas = components['schemas'];
export type ApiError = Schemas['ApiError'];
export type TipdEvent = Schemas['Event'];
export type TipdClient = Client<paths>;

export interface TipdClientOptions {
  // e.g. "http://127.0.0.1:8080" (the node's rpc-listen, or <datadir>/rpc.url).
  baseUrl: string;
  // A bearer token ("tipd1_..."); omit it for the public routes only.
  token?: string;
  // Another fetch (tests, proxies); default globalThis.fetch.
  fetch?: typeof globalThis.fetch;
}

// A client whose every call sends `Authorization: Bearer <token>`.
//   const tipd = createTipdClient({ baseUrl, token });
//   const { data, error, response } = await tipd.POST('/v1/tips', { body: {...} });
// `error` is the ApiError ({code, message}) of a non-2xx answer.
export function createTipdClient(options: TipdClientOptions): TipdClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ''),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  if (options.token) {
    const token = options.token;
    const auth: Middleware = {
      onRequest({ request }) {
        request.headers.set('Authorization', `Bearer ${token}`);
        return request;
      },
    };
    client.use(auth);
  }
  return client;
}

import { TipdApiError } from './errors.js';
export { TipdApiError } from './errors.js';

// Returns `data` of an openapi-fetch result or throws TipdApiError:
//   const info = unwrap(await tipd.GET('/v1/info'));
export function unwrap<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.error !== undefined || result.data === undefined) {
    const e = (result.error ?? {}) as Partial<ApiError>;
    throw new TipdApiError(result.response.status, e.code ?? 'unknown', e.message ?? result.response.statusText);
  }
  return result.data;
}

// uint64 fields are decimal strings in answers (protobuf's JSON mapping);
// BigInt keeps them exact past 2^53.
export function u64(value: string): bigint {
  return BigInt(value);
}

export { followEvents, type FollowEventsOptions, type EventSubscription } from './events.js';
export { verifyWebhook, WebhookVerificationError } from './webhooks.js';
