// The event-stream parser and the fetch-based feed (js/sse.js), without a
// browser: node's own fetch types and a scripted fetch.
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {EventFeed, FeedRefused, SseParser} from '../../js/sse.js';

function parseAll(chunks) {
  const out = [];
  const p = new SseParser((e) => out.push(e));
  for (const c of chunks) p.push(c);
  return {out, p};
}

test('events with id, type and multi-line data; comments ignored', () => {
  const {out} = parseAll([
    ': heartbeat\n\n',
    'id: 7\nevent: tip_received\ndata: {"a":1}\n\n',
    'id: 8\nevent: ack\ndata: line1\ndata: line2\n\n',
  ]);
  assert.deepEqual(out, [
    {id: '7', type: 'tip_received', data: '{"a":1}'},
    {id: '8', type: 'ack', data: 'line1\nline2'},
  ]);
});

test('every split point of a stream gives the same events, in every line ending', () => {
  const lf = 'id: 1\nevent: x\ndata: {"m":"a:b"}\n\n: c\n\nid: 2\ndata: two\n\n';
  for (const eol of ['\n', '\r\n', '\r']) {
    const text = lf.replaceAll('\n', eol);
    const whole = parseAll([text]).out;
    assert.equal(whole.length, 2, JSON.stringify(eol));
    assert.deepEqual(whole[0], {id: '1', type: 'x', data: '{"m":"a:b"}'});
    assert.deepEqual(whole[1], {id: '2', type: 'message', data: 'two'});
    for (let i = 1; i < text.length; i++) {
      assert.deepEqual(parseAll([text.slice(0, i), text.slice(i)]).out, whole,
          `split at ${i} with ${JSON.stringify(eol)}`);
    }
  }
});

test('an event without data is not dispatched but its id counts; bad fields are ignored', () => {
  const {out, p} = parseAll(['id: 5\n\n', 'foo: bar\nretry: x\ndata\n\n', 'data:no-space\n\n']);
  assert.equal(p.lastEventId, '5');
  assert.deepEqual(out, [{id: '5', type: 'message', data: ''}, {id: '5', type: 'message', data: 'no-space'}]);
});

test('an unterminated event at the end of a chunk waits for the rest', () => {
  const {out, p} = parseAll(['id: 9\ndata: {"x"', ':1}\n']);
  assert.equal(out.length, 0);
  p.push('\n');
  assert.deepEqual(out, [{id: '9', type: 'message', data: '{"x":1}'}]);
});

// A fetch that answers each call from a script: {status, json} or
// {chunks: [...]} (a stream that ends after them), recording the headers.
function scriptedFetch(script) {
  const calls = [];
  const impl = async (url, init) => {
    calls.push({url, headers: Object.assign({}, init.headers)});
    const step = script.shift();
    if (!step) return new Promise(() => {});  // hang: the test ends first
    if (step.json) {
      return new Response(JSON.stringify(step.json), {status: step.status});
    }
    const enc = new TextEncoder();
    const body = new ReadableStream({
      start(controller) {
        for (const c of step.chunks) controller.enqueue(enc.encode(c));
        controller.close();
      },
    });
    return new Response(body, {status: 200, headers: {'Content-Type': 'text/event-stream'}});
  };
  return {impl, calls};
}

test('the feed sends the token as a header, never in the URL, and resumes with Last-Event-ID', async () => {
  const {impl, calls} = scriptedFetch([
    {chunks: ['id: 3\nevent: tip_sent\ndata: {"id":"3","type":"tip_sent"}\n\n']},
    {chunks: ['id: 4\nevent: ack\ndata: {"id":"4","type":"ack"}\n\n']},
  ]);
  const events = [];
  const feed = new EventFeed({
    token: 'tipd1_secret', fetchImpl: impl, minDelayMs: 1,
    onEvent: (e) => events.push(e),
  });
  feed.start();
  const deadline = Date.now() + 10000;
  while (events.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  feed.stop();
  assert.deepEqual(events.map((e) => [e.id, e.type, e.data.type]),
      [['3', 'tip_sent', 'tip_sent'], ['4', 'ack', 'ack']]);
  assert.ok(calls.length >= 2);
  for (const c of calls) {
    assert.equal(c.url, '/v1/events');
    assert.ok(!c.url.includes('tipd1_secret'));
    assert.equal(c.headers.Authorization, 'Bearer tipd1_secret');
  }
  assert.equal(calls[0].headers['Last-Event-ID'], undefined);
  assert.equal(calls[1].headers['Last-Event-ID'], '3');
});

test('a refused token stops the feed with the node\'s code and message', async () => {
  const {impl, calls} = scriptedFetch([
    {status: 401, json: {code: 'TOKEN_REVOKED', message: 'token was revoked'}},
  ]);
  const states = [];
  const feed = new EventFeed({
    token: 't', fetchImpl: impl, minDelayMs: 1, onEvent: () => {},
    onState: (s, d) => states.push([s, d]),
  });
  feed.start();
  const deadline = Date.now() + 10000;
  while (!states.some(([s]) => s === 'refused') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const refused = states.find(([s]) => s === 'refused');
  assert.ok(refused, JSON.stringify(states));
  assert.ok(refused[1] instanceof FeedRefused);
  assert.equal(refused[1].status, 401);
  assert.equal(refused[1].code, 'TOKEN_REVOKED');
  assert.equal(refused[1].message, 'token was revoked');
  assert.equal(calls.length, 1, 'no reconnect after a refusal');
});

test('a server error is retried, not treated as a refusal', async () => {
  const {impl, calls} = scriptedFetch([
    {status: 503, json: {code: 'unavailable', message: 'too many event streams'}},
    {chunks: ['id: 1\ndata: {"type":"peer"}\n\n']},
  ]);
  const events = [];
  const feed = new EventFeed({token: 't', fetchImpl: impl, minDelayMs: 1, onEvent: (e) => events.push(e)});
  feed.start();
  const deadline = Date.now() + 10000;
  while (events.length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  feed.stop();
  assert.equal(events.length, 1);
  assert.ok(calls.length >= 2);
});

test('an error event that ends the stream (revoked token) stops the feed without a reconnect', async () => {
  const {impl, calls} = scriptedFetch([
    {chunks: ['id: 1\nevent: tip_sent\ndata: {"type":"tip_sent"}\n\n',
      'event: error\ndata: {"code":"TOKEN_REVOKED","message":"token was revoked at 5"}\n\n']},
    {chunks: []},
  ]);
  const events = [];
  const states = [];
  const feed = new EventFeed({
    token: 't', fetchImpl: impl, minDelayMs: 1, onEvent: (e) => events.push(e),
    onState: (s, d) => states.push([s, d]),
  });
  feed.start();
  const deadline = Date.now() + 10000;
  while (!states.some(([s]) => s === 'refused') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const refused = states.find(([s]) => s === 'refused');
  assert.ok(refused, JSON.stringify(states));
  assert.equal(refused[1].code, 'TOKEN_REVOKED');
  assert.equal(refused[1].message, 'token was revoked at 5');
  assert.deepEqual(events.map((e) => e.type), ['tip_sent'], 'the error is not passed on as an event');
  assert.equal(calls.length, 1);
});
