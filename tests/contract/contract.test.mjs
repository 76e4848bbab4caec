// The checkers check: each must refuse what it exists to catch, or a green
// run proves nothing. Run: node --test (from tests/contract/).
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { makeValidator, loadSpec, responseSchemaName } from './validator.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const strict = makeValidator({ strict: true });
const loose = makeValidator({ strict: false });
const balance = { onchain: '1', channels_local: '0', channels_remote: '0', pending_close: '0' };

test('a valid answer passes', () => {
  assert.deepEqual(strict.validate('BalanceResponse', balance), []);
});

test('a uint64 the node would print as a string must not be a number in an answer', () => {
  assert.notDeepEqual(strict.validate('BalanceResponse', { ...balance, onchain: 1 }), []);
});

test('requests accept uint64 as a string or a number, not as a negative or a fraction', () => {
  assert.deepEqual(strict.validate('DepositRequest', { amount: 5 }), []);
  assert.deepEqual(strict.validate('DepositRequest', { amount: '5' }), []);
  assert.notDeepEqual(strict.validate('DepositRequest', { amount: -5 }), []);
  assert.notDeepEqual(strict.validate('DepositRequest', { amount: '1.5' }), []);
});

test('a field the document does not describe fails strict mode only', () => {
  const extra = { ...balance, surprise: true };
  assert.match(strict.validate('BalanceResponse', extra).join(), /surprise/);
  assert.deepEqual(loose.validate('BalanceResponse', extra), []);
});

test('a missing field fails (every answer field is always printed)', () => {
  const { pending_close, ...missing } = balance;
  assert.notDeepEqual(strict.validate('BalanceResponse', missing), []);
});

test('an event must carry the payload of its type', () => {
  assert.deepEqual(strict.validate('Event', { id: '1', type: 'reset', time_ms: '2' }), []);
  assert.notDeepEqual(strict.validate('Event', { id: '1', type: 'tip_received', time_ms: '2' }), []);
  assert.notDeepEqual(strict.validate('Event', { id: '1', type: 'no_such_type', time_ms: '2' }), []);
  const ack = { channel_id: 'ab', nonce: '1', latency_ms: '3' };
  assert.deepEqual(strict.validate('Event', { id: '1', type: 'ack', time_ms: '2', ack }), []);
  assert.notDeepEqual(strict.validate('Event', { id: '1', type: 'tip_sent', time_ms: '2', ack }), []);
});

test('responseSchemaName follows the document', () => {
  const spec = loadSpec();
  assert.equal(responseSchemaName(spec, 'GET', '/v1/info', 200), 'InfoResponse');
  assert.equal(responseSchemaName(spec, 'POST', '/v1/tips', 202), 'TipResponse');
  assert.equal(responseSchemaName(spec, 'GET', '/v1/info', 401), 'ApiError');
});

function checkExamples(markdown) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tipd-contract-'));
  const file = path.join(dir, 'api.md');
  fs.writeFileSync(file, markdown);
  const r = spawnSync(process.execPath, [path.join(here, 'check_examples.mjs'), file], { encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true });
  return r;
}

test('check_examples refuses an unmarked block, a mismatch and an abridged example', () => {
  const good = '<!-- schema: BalanceResponse -->\n```json\n' + JSON.stringify(balance) + '\n```\n';
  assert.equal(checkExamples(good).status, 0);
  assert.equal(checkExamples('```json\n{}\n```\n' + good).status, 1);
  const wrong = good.replace('"onchain":"1"', '"onchain":1');
  assert.match(checkExamples(wrong).stderr, /does not match BalanceResponse/);
  const abridged = good.replace('"onchain":"1"', '"onchain":"…"');
  assert.equal(checkExamples(abridged).status, 1);
  assert.equal(checkExamples('<!-- schema: NoSuchSchema -->\n```json\n{}\n```\n').status, 1);
});

function checkProto(proto, schemas) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tipd-contract-proto-'));
  fs.mkdirSync(path.join(dir, 'docs'));
  fs.mkdirSync(path.join(dir, 'proto/tipd'), { recursive: true });
  // 20 filler messages/schemas so the parser's sanity floor is met.
  let filler = '';
  const all = { ...schemas };
  for (let i = 0; i < 20; i++) {
    filler += `message Filler${i} { string a = 1; }\n`;
    all[`Filler${i}`] = { type: 'object', properties: { a: { type: 'string' } } };
  }
  fs.writeFileSync(path.join(dir, 'proto/tipd/x.proto'), proto + filler);
  fs.writeFileSync(path.join(dir, 'docs/openapi.json'), JSON.stringify({ components: { schemas: { Uint64: {}, ...all } } }));
  const r = spawnSync(process.execPath, [path.join(here, 'check_proto.mjs'), dir], { encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true });
  return r;
}

test('check_proto refuses a missing field, an extra one and a wrong JSON type', () => {
  const proto = 'message Thing {\n  uint64 amount = 1;  // a comment\n  repeated string tags = 2;\n}\n';
  const good = { Thing: { type: 'object', properties: { amount: { $ref: '#/components/schemas/Uint64' }, tags: { type: 'array', items: { type: 'string' } } } } };
  assert.equal(checkProto(proto, good).status, 0);
  const missing = { Thing: { type: 'object', properties: { amount: good.Thing.properties.amount } } };
  assert.match(checkProto(proto, missing).stderr, /Thing\.tags: in proto\/tipd but not in docs/);
  const extra = { Thing: { type: 'object', properties: { ...good.Thing.properties, more: { type: 'string' } } } };
  assert.match(checkProto(proto, extra).stderr, /Thing\.more: in docs\/openapi.json but not in the proto/);
  const number = { Thing: { type: 'object', properties: { ...good.Thing.properties, amount: { type: 'integer' } } } };
  assert.match(checkProto(proto, number).stderr, /Thing\.amount: uint64 must be \$ref Uint64/);
});
