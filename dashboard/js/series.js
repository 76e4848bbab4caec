// The chart's data: tips per second in each direction and the ack latency,
// one bucket per second over a sliding window (the last few minutes).
//
// Buckets are keyed by the node's event time (Event.time_ms), clamped into
// the window, so a replay after a reconnect lands where it happened rather
// than as a burst at the moment it arrived. The x values are Unix seconds,
// as uPlot's time scale wants them.

export class RateSeries {
  constructor(windowSeconds = 300) {
    this.windowSeconds = windowSeconds;
    this.buckets = new Map();  // second -> {tipsIn, tipsOut, latencySum, latencyCount}
    this.newest = 0;           // the newest second the window covers
    this.opened = 0;           // the first second advanced to (the page opened)
    this.totalIn = 0;          // every tip counted since the page opened
    this.totalOut = 0;
  }

  bucket(second) {
    let b = this.buckets.get(second);
    if (!b) {
      b = {tipsIn: 0, tipsOut: 0, latencySum: 0, latencyCount: 0};
      this.buckets.set(second, b);
    }
    return b;
  }

  // The second an event at `ms` counts in, or null if it is older than the
  // window. Events from the future (clock skew) count in the newest second.
  secondOf(ms) {
    const s = Math.floor(ms / 1000);
    if (this.newest === 0) return s;
    if (s <= this.newest - this.windowSeconds) return null;
    return Math.min(s, this.newest);
  }

  // direction: 'received' or 'sent'.
  addTip(ms, direction) {
    if (direction === 'received') this.totalIn++;
    else this.totalOut++;
    const s = this.secondOf(ms);
    if (s === null) return;
    const b = this.bucket(s);
    if (direction === 'received') b.tipsIn++;
    else b.tipsOut++;
  }

  addLatency(ms, latencyMs) {
    const s = this.secondOf(ms);
    if (s === null) return;
    const b = this.bucket(s);
    b.latencySum += latencyMs;
    b.latencyCount++;
  }

  // Moves the window's end to `nowMs` (never backwards) and forgets older
  // buckets.
  advance(nowMs) {
    const s = Math.floor(nowMs / 1000);
    if (s > this.newest) this.newest = s;
    if (this.opened === 0) this.opened = s;
    const oldest = this.newest - this.windowSeconds + 1;
    for (const key of this.buckets.keys()) {
      if (key < oldest) this.buckets.delete(key);
    }
  }

  // [x, tips in/s, tips out/s, mean ack latency in ms (null: no ack)], one
  // entry per second up to `newest`, for uPlot.setData. It spans at least
  // `minSeconds` (so the time axis is readable from the first second) and at
  // most the window; seconds before the page opened that hold no tip are
  // null (not drawn), not zero: the page did not watch them.
  data(minSeconds = 60) {
    const xs = [];
    const tin = [];
    const tout = [];
    const lat = [];
    if (this.newest === 0) return [xs, tin, tout, lat];
    let first = Math.min(this.opened, this.newest - minSeconds + 1);
    for (const key of this.buckets.keys()) first = Math.min(first, key);
    first = Math.max(first, this.newest - this.windowSeconds + 1);
    for (let s = first; s <= this.newest; s++) {
      const b = this.buckets.get(s);
      const watched = s >= this.opened;
      xs.push(s);
      tin.push(b ? b.tipsIn : watched ? 0 : null);
      tout.push(b ? b.tipsOut : watched ? 0 : null);
      lat.push(b && b.latencyCount > 0 ? b.latencySum / b.latencyCount : null);
    }
    return [xs, tin, tout, lat];
  }

  // Sums over the window, for the summary cards and the tests.
  summary() {
    let tipsIn = 0;
    let tipsOut = 0;
    let latencySum = 0;
    let latencyCount = 0;
    for (const b of this.buckets.values()) {
      tipsIn += b.tipsIn;
      tipsOut += b.tipsOut;
      latencySum += b.latencySum;
      latencyCount += b.latencyCount;
    }
    return {
      tipsIn,
      tipsOut,
      acks: latencyCount,
      meanLatencyMs: latencyCount > 0 ? latencySum / latencyCount : null,
      totalIn: this.totalIn,
      totalOut: this.totalOut,
    };
  }

  // Tips per second over the last `seconds` full seconds.
  recentRate(seconds = 10) {
    let n = 0;
    for (let s = this.newest - seconds; s < this.newest; s++) {
      const b = this.buckets.get(s);
      if (b) n += b.tipsIn + b.tipsOut;
    }
    return n / seconds;
  }
}
