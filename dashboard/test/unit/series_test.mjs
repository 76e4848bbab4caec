// The chart's per-second series (js/series.js).
import {test} from 'node:test';
import assert from 'node:assert/strict';

import {RateSeries} from '../../js/series.js';

test('tips count per second and direction; latency is the mean per second', () => {
  const s = new RateSeries(60);
  s.advance(100_000);
  s.addTip(99_100, 'received');
  s.addTip(99_900, 'received');
  s.addTip(99_500, 'sent');
  s.addLatency(99_200, 4);
  s.addLatency(99_300, 8);
  s.addTip(100_400, 'sent');
  const [xs, tin, tout, lat] = s.data(1);
  assert.deepEqual(xs, [99, 100], 'from the earliest tip, though the page opened at 100 s');
  assert.deepEqual(tin, [2, 0]);
  assert.deepEqual(tout, [1, 1]);
  assert.deepEqual(lat, [6, null]);
  const sum = s.summary();
  assert.equal(sum.tipsIn, 2);
  assert.equal(sum.tipsOut, 2);
  assert.equal(sum.meanLatencyMs, 6);
});

test('the window slides: old seconds drop, the x axis keeps moving with no data', () => {
  const s = new RateSeries(10);
  s.advance(1_000_000);
  s.addTip(1_000_000, 'sent');
  s.advance(1_005_000);
  assert.equal(s.data(1)[0].length, 6);
  s.advance(1_012_000);
  const [xs, , tout] = s.data();
  assert.equal(xs[xs.length - 1], 1012);
  assert.ok(xs.length <= 10);
  assert.equal(tout.reduce((a, b) => a + b, 0), 0, 'the tip at 1000 s left the window');
  assert.equal(s.summary().totalOut, 1, 'but still counts since the page opened');
});

test('events older than the window are counted in totals only; future ones in the newest second', () => {
  const s = new RateSeries(10);
  s.advance(500_000);
  s.addTip(100_000, 'received');
  s.addTip(900_000, 'received');
  const [xs, tin] = s.data();
  assert.equal(xs[xs.length - 1], 500);
  assert.equal(tin[tin.length - 1], 1);
  assert.equal(tin.reduce((a, b) => a + b, 0), 1);
  assert.equal(s.summary().totalIn, 2);
});

test('the x axis spans at least a minute; seconds before the page opened are null, after it 0', () => {
  const s = new RateSeries(300);
  s.advance(2_000_000);
  let [xs, tin] = s.data(4);
  assert.deepEqual(xs, [1997, 1998, 1999, 2000]);
  assert.deepEqual(tin, [null, null, null, 0]);
  s.advance(2_005_500);
  [xs, tin] = s.data(4);
  assert.deepEqual(xs, [2000, 2001, 2002, 2003, 2004, 2005]);
  assert.deepEqual(tin, [0, 0, 0, 0, 0, 0]);
  assert.equal(s.data()[0].length, 60);
});
