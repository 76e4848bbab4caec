// Server-Sent Events over fetch(), so that the request can carry the
// `Authorization: Bearer` header (EventSource cannot send headers, and the
// token must never appear in a URL, where logs and history keep it).
//
// SseParser implements the event-stream format of the HTML standard
// ("Parsing an event stream"): lines end in CRLF, LF or CR; `:` starts a
// comment; the fields `event`, `data`, `id` and `retry`; an event is
// dispatched at a blank line if it has data. EventFeed keeps one stream
// open, reconnects with a growing delay, and resumes with `Last-Event-ID`
// so that no event is missed or repeated across a reconnect (the node
// replays what came after that id, docs/api.md "Live events").

export class SseParser {
  // onEvent({id, type, data}) for each complete event; `id` is the last
  // event id in force (the stream's, not only this event's).
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.pendingCR = false;  // a chunk ended in CR: a following LF is part of it
    this.data = [];
    this.type = '';
    this.lastEventId = '';
    this.retryMs = null;
  }

  push(text) {
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      this.line(this.buffer.slice(start, i));
      if (c === '\r') {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === '\n') i++;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === '') return this.dispatch();
    if (line.startsWith(':')) return;  // comment (the node's heartbeat)
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.type = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retryMs = Number(value);
        break;
      default:
        break;  // unknown fields are ignored
    }
  }

  dispatch() {
    const data = this.data;
    const type = this.type || 'message';
    this.data = [];
    this.type = '';
    if (data.length === 0) return;
    this.onEvent({id: this.lastEventId, type, data: data.join('\n')});
  }
}

// Why a feed stopped for good: the node refused the token (401) or its
// scope (403). Other failures (network, 5xx, the stream ending) reconnect.
export class FeedRefused extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class EventFeed {
  // options: token, url ('/v1/events'), onEvent(event) with event.data
  // already parsed as JSON, onState(state, detail) with state one of
  // 'connecting', 'live', 'reconnecting', 'refused'; fetchImpl (tests);
  // minDelayMs / maxDelayMs for reconnects; stallMs: no byte (not even the
  // node's 15 s heartbeat) for this long means the connection is dead.
  constructor(options) {
    this.token = options.token;
    this.url = options.url || '/v1/events';
    this.onEvent = options.onEvent;
    this.onState = options.onState || (() => {});
    this.fetchImpl = options.fetchImpl || ((...a) => fetch(...a));
    this.minDelayMs = options.minDelayMs ?? 500;
    this.maxDelayMs = options.maxDelayMs ?? 15000;
    this.stallMs = options.stallMs ?? 45000;
    this.lastEventId = options.lastEventId || '';
    this.stopped = true;
    this.controller = null;
    this.connects = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let delay = this.minDelayMs;
    while (!this.stopped) {
      this.onState(this.connects === 0 ? 'connecting' : 'reconnecting');
      let opened = false;
      try {
        opened = await this.once();
      } catch (err) {
        if (err instanceof FeedRefused) {
          this.stopped = true;
          this.onState('refused', err);
          return;
        }
        // Network error, abort or a bad chunk: reconnect below.
      }
      if (this.stopped) return;
      if (opened) delay = this.minDelayMs;
      this.onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(this.maxDelayMs, delay * 2);
    }
  }

  // One connection: resolves true once it was open and has ended, false if
  // it never opened; throws FeedRefused on 401/403.
  async once() {
    this.connects++;
    const controller = new AbortController();
    this.controller = controller;
    const headers = {Authorization: 'Bearer ' + this.token, Accept: 'text/event-stream'};
    if (this.lastEventId) headers['Last-Event-ID'] = this.lastEventId;
    const res = await this.fetchImpl(this.url, {headers, cache: 'no-store', signal: controller.signal});
    if (res.status === 401 || res.status === 403) {
      let code = 'HTTP_' + res.status;
      let message = 'the node refused the token';
      try {
        const body = await res.json();
        code = body.code || code;
        message = body.message || message;
      } catch (e) {
        // not JSON: keep the generic message
      }
      throw new FeedRefused(res.status, code, message);
    }
    if (!res.ok || !res.body) {
      if (res.body) res.body.cancel().catch(() => {});
      return false;
    }
    this.onState('live');
    let refusal = null;
    const parser = new SseParser((ev) => {
      let parsed;
      try {
        parsed = JSON.parse(ev.data);
      } catch (e) {
        return;  // not an event of ours; skip it
      }
      // The node ends a stream whose token it no longer accepts (revoked,
      // expired) with a last `event: error` carrying {code, message}.
      if (ev.type === 'error' && parsed && parsed.code) {
        refusal = new FeedRefused(401, parsed.code, parsed.message || 'the node ended the stream');
        controller.abort();
        return;
      }
      if (ev.id) this.lastEventId = ev.id;
      this.onEvent({id: ev.id, type: ev.type, data: parsed});
    });
    parser.lastEventId = this.lastEventId;
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let stall = null;
    const armStall = () => {
      clearTimeout(stall);
      stall = setTimeout(() => controller.abort(), this.stallMs);
    };
    armStall();
    try {
      while (true) {
        const {value, done} = await reader.read();
        if (done) break;
        armStall();
        parser.push(decoder.decode(value, {stream: true}));
      }
    } catch (e) {
      // aborted (stop, stall) or the connection broke
    } finally {
      clearTimeout(stall);
    }
    if (refusal) throw refusal;
    return true;
  }
}
