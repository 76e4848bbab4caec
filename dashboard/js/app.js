// The dashboard page: asks for a token, then shows the node live.
//
// Data flow: one EventFeed (sse.js) streams GET /v1/events with the token in
// the Authorization header; tips are added to the live list and counted in
// the chart's series (series.js), acks give the latency, channel, stream and
// anomaly events update their tables. Balances, channels, stats, streams
// and anomalies are also polled, so a missed event only delays a number.
// A 401 anywhere (wrong, expired or revoked token) signs the page out with
// the node's message.
//
// Untrusted text (tip messages, metadata, names, error messages) only ever
// reaches the page through textContent: no innerHTML anywhere, and the
// Content-Security-Policy forbids inline script as a second wall.

import {Api} from './api.js';
import {EventFeed} from './sse.js';
import {RateSeries} from './series.js';
import * as fmt from './format.js';

const TOKEN_KEY = 'tipd.dashboard.token';
const MAX_TIPS = 200;
const CORE_REFRESH_MS = 5000;
const EXTRA_REFRESH_MS = 15000;
const STATS_RANGE_MS = 24 * 3600 * 1000;

const $ = (id) => document.getElementById(id);

// Builds an element; `text` goes through textContent, never parsed as HTML.
function el(tag, opts = {}, children = []) {
  const e = document.createElement(tag);
  if (opts.text !== undefined && opts.text !== null) e.textContent = String(opts.text);
  if (opts.cls) e.className = opts.cls;
  if (opts.title) e.title = opts.title;
  for (const c of children) e.appendChild(c);
  return e;
}

function td(text, cls, title) {
  return el('td', {text, cls, title});
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

let session = null;

// ---- sign in / out ----

function showLoginError(message) {
  const p = $('login-error');
  p.textContent = message;
  p.hidden = !message;
}

function describeRefusal(err) {
  if (err.status === 401) {
    return 'The node refused this token: ' + err.message + ' (' + err.code + ').';
  }
  if (err.status === 403) {
    return 'This token may not read this node (the dashboard needs the read scope): ' +
        err.message + ' (' + err.code + ').';
  }
  if (err.status === 0) return 'Cannot reach the node: ' + err.message;
  return 'The node answered ' + err.status + ': ' + err.message + ' (' + err.code + ').';
}

async function signIn(token) {
  showLoginError('');
  $('login-button').disabled = true;
  const api = new Api(token);
  let info;
  try {
    info = await api.get('/v1/info');
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLoginError(describeRefusal(err));
    $('login-button').disabled = false;
    return;
  }
  $('login-button').disabled = false;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-input').value = '';
  start(api, token, info);
}

function signOut(message) {
  if (session) {
    session.feed.stop();
    for (const t of session.timers) clearInterval(t);
    if (session.chart) session.chart.destroy();
    if (session.resizeObserver) session.resizeObserver.disconnect();
    session = null;
  }
  sessionStorage.removeItem(TOKEN_KEY);
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('feed-state').hidden = true;
  $('login').hidden = false;
  for (const id of ['node-id', 'node-chain', 'node-height']) $(id).textContent = '';
  showLoginError(message || '');
  $('token-input').focus();
}

// Any call that finds the token refused ends the session.
function handleError(err, where) {
  if (!session) return;
  if (err.status === 401) {
    signOut(describeRefusal(err));
    return;
  }
  const p = $('dash-error');
  p.textContent = where + ': ' + describeRefusal(err);
  p.hidden = false;
}

function clearError() {
  $('dash-error').hidden = true;
}

// ---- the session ----

function start(api, token, info) {
  const series = new RateSeries(300);
  session = {
    api,
    series,
    feed: null,
    feedState: 'connecting',
    events: 0,
    lastEventId: '',
    tips: new Map(),  // "channel/direction/index" -> <tr>
    seen: new Map(),  // "channel/direction" -> {min, max, count} of tip indexes since opened
    channels: new Map(),
    streams: new Map(),
    anomalies: new Map(),
    panels: {},
    timers: [],
    chart: null,
    info,
  };
  $('login').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  $('feed-state').hidden = false;
  $('dash-error').hidden = true;
  replaceRows($('tips').tBodies[0], []);
  $('tips-empty').hidden = false;
  $('tips-count').textContent = '';
  renderInfo(info);
  createChart();

  // A feed stopped by a sign-out may still report once; it must not touch
  // a later session.
  const current = session;
  session.feed = new EventFeed({
    token,
    onEvent: (ev) => {
      if (session === current) onEvent(ev);
    },
    onState: (state, detail) => {
      if (session !== current) return;
      session.feedState = state;
      const pill = $('feed-state');
      pill.className = 'pill ' + state;
      pill.textContent = state === 'live' ? 'live' : state;
      if (state === 'refused') handleError(detail, 'live events');
    },
  });
  session.feed.start();

  refreshCore();
  refreshExtras();
  tick();
  session.timers.push(setInterval(tick, 1000));
  session.timers.push(setInterval(refreshCore, CORE_REFRESH_MS));
  session.timers.push(setInterval(refreshExtras, EXTRA_REFRESH_MS));
}

function renderInfo(info) {
  $('node-id').textContent = fmt.shortHex(info.node_id, 16);
  $('node-id').title = info.node_id || '';
  $('node-chain').textContent = info.chain_id ? 'chain ' + info.chain_id : '';
  $('node-height').textContent = 'height ' + (info.ledger_height ?? '');
  if (info.read_only) {
    handleError({status: 503, code: 'READ_ONLY', message: info.read_only_reason || 'read-only'},
        'node');
  }
}

// ---- live events ----

function onEvent(ev) {
  if (!session) return;
  session.events++;
  if (ev.id) session.lastEventId = ev.id;
  const e = ev.data || {};
  const type = e.type || ev.type;
  const ms = Number(e.time_ms) || Date.now();
  switch (type) {
    case 'tip_sent':
    case 'tip_received':
      if (e.tip) {
        const direction = type === 'tip_received' ? 'received' : 'sent';
        if (addTip(e.tip, ms, direction)) {
          session.series.addTip(ms, direction);
          updateCounts();
        }
      }
      break;
    case 'ack':
      if (e.ack) session.series.addLatency(ms, Number(e.ack.latency_ms) || 0);
      break;
    case 'channel':
      if (e.channel && e.channel.channel) {
        session.channels.set(e.channel.channel.channel_id, e.channel.channel);
        renderChannels();
      }
      break;
    case 'tip_refunded':
      if (e.refund) markRefunded(e.refund);
      break;
    case 'stream_started':
    case 'stream_tip':
    case 'stream_stopped':
      if (e.stream && session.panels.streams !== 'unavailable') {
        session.streams.set(e.stream.id, e.stream);
        renderStreams();
      }
      break;
    case 'anomaly':
      if (e.anomaly && session.panels.anomalies !== 'unavailable') {
        session.anomalies.set(e.anomaly.id, e.anomaly);
        renderAnomalies();
      }
      break;
    default:
      break;  // peer, reset, and types this page does not show
  }
}

function tipKey(channelId, direction, index) {
  return channelId + '/' + direction + '/' + index;
}

// Adds one tip to the live list; false if it was already there (a replay).
function addTip(tipApi, ms, direction) {
  const tip = tipApi.tip || {};
  const key = tipKey(tipApi.channel_id, direction, tip.index);
  if (session.tips.has(key)) return false;
  // Indexes run 1, 2, 3, ... per channel and direction: with min, max and
  // count, a gap (a missed event) shows as count < max - min + 1.
  const seenKey = tipApi.channel_id + '/' + direction;
  const index = Number(tip.index);
  const seen = session.seen.get(seenKey);
  if (!seen) {
    session.seen.set(seenKey, {min: index, max: index, count: 1});
  } else if (index >= seen.min && index <= seen.max) {
    return false;  // a replayed tip that has left the list
  } else {
    seen.min = Math.min(seen.min, index);
    seen.max = Math.max(seen.max, index);
    seen.count++;
  }
  const meta = fmt.metadataObject(tip.metadata);
  const refundOf = tipApi.refund_of || meta.refund_of;
  const tr = el('tr', {cls: (direction === 'received' ? 'in' : 'out') + ' fresh'});
  tr.dataset.channel = tipApi.channel_id || '';
  tr.dataset.direction = direction;
  tr.dataset.index = String(tip.index ?? '');
  tr.appendChild(td(fmt.time(tip.created_at_ms || ms)));
  tr.appendChild(td(direction === 'received' ? 'in' : 'out', 'dir'));
  tr.appendChild(td(fmt.amount(tip.amount), 'num amount'));
  const msg = td(tip.message || '', 'message');
  if (refundOf) msg.appendChild(el('span', {cls: 'tag', text: 'refund of #' + refundOf.split(':').pop()}));
  if (Number(tipApi.refunded_total) > 0) {
    msg.appendChild(el('span', {cls: 'tag refunded', text: 'refunded ' + fmt.amount(tipApi.refunded_total)}));
  }
  if (meta.action) msg.appendChild(el('span', {cls: 'tag', text: meta.action}));
  tr.appendChild(msg);
  const who = [meta.sender_name, meta.app_name].filter(Boolean).join(' · ');
  tr.appendChild(td(who, 'who'));
  tr.appendChild(td(fmt.shortHex(tipApi.channel_id, 10), 'mono', tipApi.channel_id));
  const tbody = $('tips').tBodies[0];
  tbody.insertBefore(tr, tbody.firstChild);
  session.tips.set(key, tr);
  while (tbody.rows.length > MAX_TIPS) {
    const last = tbody.rows[tbody.rows.length - 1];
    session.tips.delete(tipKey(last.dataset.channel, last.dataset.direction, last.dataset.index));
    last.remove();
  }
  $('tips-empty').hidden = true;
  return true;
}

// The refunded tip went the other way: the refunder received it.
function markRefunded(refund) {
  for (const direction of ['received', 'sent']) {
    const tr = session.tips.get(tipKey(refund.channel_id, direction, refund.original_index));
    if (!tr) continue;
    const cell = tr.querySelector('td.message');
    const tag = cell.querySelector('.refunded') || el('span', {cls: 'tag refunded'});
    tag.textContent = 'refunded ' + fmt.amount(refund.refunded_total);
    cell.appendChild(tag);
  }
}

// ---- chart ----

function createChart() {
  const box = $('chart');
  box.replaceChildren();
  if (typeof window.uPlot !== 'function') {
    box.appendChild(el('p', {cls: 'error', text: 'The chart library did not load.'}));
    return;
  }
  const css = getComputedStyle(document.documentElement);
  const color = (name) => css.getPropertyValue(name).trim();
  const opts = {
    width: Math.max(300, box.clientWidth),
    height: 260,
    legend: {live: true},
    cursor: {drag: {x: false, y: false}},
    scales: {
      x: {time: true},
      tips: {range: (u, min, max) => [0, Math.max(1, max)]},
      ms: {range: (u, min, max) => [0, Math.max(1, max ?? 1)]},
    },
    series: [
      {},
      {label: 'tips/s in', scale: 'tips', stroke: color('--in'), width: 2},
      {label: 'tips/s out', scale: 'tips', stroke: color('--out'), width: 2},
      {label: 'ack latency (ms)', scale: 'ms', stroke: color('--lat'), width: 1, dash: [4, 3],
        spanGaps: false},
    ],
    axes: [
      {},
      {scale: 'tips', label: 'tips/s'},
      {scale: 'ms', side: 1, label: 'ms', grid: {show: false}},
    ],
  };
  session.chart = new window.uPlot(opts, session.series.data(), box);
  if (typeof ResizeObserver === 'function') {
    session.resizeObserver = new ResizeObserver(() => {
      if (session && session.chart) {
        session.chart.setSize({width: Math.max(300, box.clientWidth), height: 260});
      }
    });
    session.resizeObserver.observe(box);
  }
}

function updateCounts() {
  const s = session.series.summary();
  $('card-tips').textContent = s.totalIn.toLocaleString('en-US') + ' / ' +
      s.totalOut.toLocaleString('en-US');
  $('tips-count').textContent = '(' + (s.totalIn + s.totalOut).toLocaleString('en-US') + ' since opened)';
  return s;
}

function tick() {
  if (!session) return;
  session.series.advance(Date.now());
  if (session.chart) session.chart.setData(session.series.data());
  const s = updateCounts();
  $('card-rate').textContent = fmt.number(session.series.recentRate(10), 1);
  $('card-latency').textContent = s.meanLatencyMs === null ? '–' : fmt.number(s.meanLatencyMs, 1) + ' ms';
}

// ---- polled data ----

async function refreshCore() {
  if (!session) return;
  const api = session.api;
  try {
    const [info, balance, channels] = await Promise.all([
      api.get('/v1/info'), api.get('/v1/balance'), api.get('/v1/channels'),
    ]);
    if (!session || session.api !== api) return;
    clearError();
    session.info = info;
    renderInfo(info);
    $('card-onchain').textContent = fmt.amount(balance.onchain);
    $('card-channels').textContent = fmt.amount(balance.channels_local) + ' / ' +
        fmt.amount(balance.channels_remote);
    session.channels = new Map((channels.channels || []).map((c) => [c.channel_id, c]));
    renderChannels();
  } catch (err) {
    if (session && session.api === api) handleError(err, 'refresh');
  }
}

function renderChannels() {
  const rows = [];
  for (const c of session.channels.values()) {
    const tr = el('tr');
    tr.dataset.channel = c.channel_id;
    tr.appendChild(td(fmt.shortHex(c.channel_id, 12), 'mono', c.channel_id));
    tr.appendChild(td(fmt.shortHex(c.peer_node_id, 12), 'mono', c.peer_node_id));
    const state = td(c.state + (c.restored_awaiting_peer ? ' (restored, awaiting peer)' : ''),
        'state state-' + c.state, c.close_reason || '');
    tr.appendChild(state);
    tr.appendChild(td(fmt.amount(c.balance_local), 'num balance-local'));
    tr.appendChild(td(fmt.amount(c.balance_remote), 'num balance-remote'));
    tr.appendChild(td(fmt.amount(c.tips_sent), 'num'));
    tr.appendChild(td(fmt.amount(c.tips_received), 'num'));
    rows.push(tr);
  }
  replaceRows($('channels').tBodies[0], rows);
  $('channels-empty').hidden = rows.length > 0;
}

// Loads one optional panel. A 404 means the node has no such endpoint: the
// panel says so instead of showing an error.
async function loadPanel(name, path, render) {
  const panel = $(name + '-panel');
  const status = panel.querySelector('.status');
  const body = panel.querySelector('.body');
  const api = session.api;
  try {
    const json = await api.get(path);
    if (!session || session.api !== api) return;
    session.panels[name] = 'ok';
    status.hidden = true;
    body.hidden = false;
    render(json);
  } catch (err) {
    if (!session || session.api !== api) return;
    if (err.unauthorized) return handleError(err, name);
    body.hidden = true;
    status.hidden = false;
    if (err.unavailable) {
      session.panels[name] = 'unavailable';
      status.textContent = 'Not available on this node (' + path.split('?')[0] + ' answered 404).';
    } else if (err.status === 403) {
      // E.g. GET /v1/streams needs the tip scope; a read token still sees
      // the stream events as they come.
      session.panels[name] = 'forbidden';
      status.textContent = 'This token may not read ' + path.split('?')[0] + ': ' + err.message +
          ' (' + err.code + ').';
    } else {
      session.panels[name] = 'error';
      status.textContent = describeRefusal(err);
    }
  }
}

function refreshExtras() {
  if (!session) return;
  const now = Date.now();
  loadPanel('stats', '/v1/stats?from_ms=' + (now - STATS_RANGE_MS) + '&to_ms=' + now +
      '&group_by=none', renderStats);
  loadPanel('streams', '/v1/streams', (json) => {
    session.streams = new Map((json.streams || []).map((s) => [s.id, s]));
    renderStreams();
  });
  loadPanel('anomalies', '/v1/anomalies', (json) => {
    session.anomalies = new Map((json.anomalies || []).map((a) => [a.id, a]));
    renderAnomalies();
  });
}

function kvRow(label, value) {
  const tr = el('tr');
  tr.appendChild(td(label));
  tr.appendChild(td(value, 'num'));
  return tr;
}

function sideText(side) {
  if (!side) return '0';
  return fmt.amount(side.count) + ' tips, ' + fmt.amount(side.sum) + ' units (mean ' +
      fmt.number(side.mean, 1) + ', median ' + fmt.number(side.median, 1) + ')';
}

// A fee total of a channel entry: a number, or an object with `total`.
function feeTotal(c) {
  if (c.fees !== undefined && typeof c.fees === 'object' && c.fees !== null) return c.fees.total;
  return c.fees ?? c.total ?? c.fees_total ?? '0';
}

function renderStats(stats) {
  const fees = stats.fees || {};
  const rows = [];
  for (const g of stats.groups || []) {
    const prefix = stats.group_by && stats.group_by !== 'none' ? g.key + ': ' : '';
    rows.push(kvRow(prefix + 'sent', sideText(g.sent)));
    rows.push(kvRow(prefix + 'received', sideText(g.received)));
    rows.push(kvRow(prefix + 'peak tips/s', fmt.number(g.peak_tips_per_second, 1)));
    if (g.refunds) {
      rows.push(kvRow(prefix + 'refunds', fmt.amount(g.refunds.count) + ' (' +
          fmt.amount(g.refunds.sum) + ' units)'));
    }
  }
  rows.push(kvRow('ledger fees paid (all time)', fmt.amount(fees.total) + ' (open ' +
      fmt.amount(fees.open) + ', deposits ' + fmt.amount(fees.deposit) + ', close ' +
      fmt.amount(fees.close) + ', proofs ' + fmt.amount(fees.proofs) + ')'));
  rows.push(kvRow('tips carried (all time)', fmt.amount(fees.tips_carried) +
      (fees.amount_carried !== undefined ? ' (' + fmt.amount(fees.amount_carried) + ' units)' : '')));
  const perTip = kvRow('effective fee per tip', fmt.number(fees.effective_fee_per_tip, 6));
  perTip.id = 'stats-fee-per-tip';
  rows.push(perTip);
  rows.push(kvRow('effective fee, % of amount', fmt.percent(fees.effective_fee_percent, 4)));
  replaceRows($('stats').tBodies[0], rows);
  $('card-fee').textContent = fees.effective_fee_per_tip === undefined ? '–' :
      fmt.number(fees.effective_fee_per_tip, 4) + ' (' + fmt.percent(fees.effective_fee_percent, 3) + ')';
  const chRows = (stats.channels || []).map((c) => {
    const tr = el('tr');
    tr.appendChild(td(fmt.shortHex(c.channel_id, 12), 'mono', c.channel_id));
    tr.appendChild(td(fmt.amount(feeTotal(c)), 'num'));
    tr.appendChild(td(fmt.amount(c.tips_carried), 'num'));
    tr.appendChild(td(fmt.number(c.effective_fee_per_tip, 6), 'num'));
    tr.appendChild(td(fmt.percent(c.effective_fee_percent, 4), 'num'));
    return tr;
  });
  replaceRows($('stats-channels').tBodies[0], chRows);
}

function renderStreams() {
  const panel = $('streams-panel');
  if (session.streams.size > 0) panel.querySelector('.body').hidden = false;
  const rows = [];
  for (const s of session.streams.values()) {
    const tr = el('tr');
    tr.dataset.stream = s.id;
    tr.appendChild(td(fmt.shortHex(s.id, 10), 'mono', s.id));
    const to = s.channel_id || s.peer_node_id || '';
    tr.appendChild(td(fmt.shortHex(to, 10), 'mono', to));
    tr.appendChild(td(fmt.amount(s.amount) + ' / ' + fmt.number(Number(s.interval_ms) / 1000, 1) + ' s', 'num'));
    tr.appendChild(td(s.state + (s.stopped_reason ? ' (' + s.stopped_reason + ')' : ''), 'state-' + s.state));
    tr.appendChild(td(fmt.amount(s.paid_total) + ' in ' + fmt.amount(s.tips_paid) + ' tips' +
        (Number(s.intervals_skipped) > 0 ? ', ' + s.intervals_skipped + ' skipped' : ''), 'num'));
    tr.appendChild(td(s.state === 'active' ? fmt.time(s.next_at_ms) : ''));
    rows.push(tr);
  }
  if (rows.length === 0) {
    const tr = el('tr');
    const cell = td('No streams.', 'muted');
    cell.colSpan = 6;
    tr.appendChild(cell);
    rows.push(tr);
  }
  replaceRows($('streams').tBodies[0], rows);
}

function renderAnomalies() {
  const list = [...session.anomalies.values()].sort((a, b) => Number(b.at_ms) - Number(a.at_ms));
  const rows = list.slice(0, 100).map((a) => {
    const tr = el('tr');
    tr.dataset.anomaly = a.id;
    tr.appendChild(td(fmt.dateTime(a.at_ms)));
    tr.appendChild(td(a.rule));
    tr.appendChild(td(a.subject_kind + ' ' + fmt.shortHex(a.subject, 16) +
        (a.direction ? ' (' + a.direction + ')' : ''), '', a.subject));
    tr.appendChild(td(a.detail + (a.amount && a.amount !== '0' ? ' — tip of ' + fmt.amount(a.amount) : ''),
        'message'));
    const released = Number(a.released_at_ms) > 0;
    tr.appendChild(td(a.held ? (released ? 'released' : 'held') : '', a.held && !released ? 'held' : ''));
    return tr;
  });
  if (rows.length === 0) {
    const tr = el('tr');
    const cell = td('No anomalies.', 'muted');
    cell.colSpan = 5;
    tr.appendChild(cell);
    rows.push(tr);
  }
  replaceRows($('anomalies').tBodies[0], rows);
}

// ---- wiring ----

// For the browser test and for curious operators in the console: what the
// page holds, never the token.
window.tipdDashboard = {
  state() {
    if (!session) return {signedIn: false};
    session.series.advance(Date.now());
    return {
      signedIn: true,
      feedState: session.feedState,
      events: session.events,
      lastEventId: session.lastEventId,
      tipsShown: session.tips.size,
      seen: Object.fromEntries(session.seen),
      chart: session.series.data(),
      summary: session.series.summary(),
      chartDrawn: !!session.chart,
      panels: Object.assign({}, session.panels),
      channels: [...session.channels.values()].map((c) => ({channel_id: c.channel_id, state: c.state})),
    };
  },
};

let initialized = false;
function init() {
  if (initialized) return;
  initialized = true;
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    if (token) signIn(token);
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else $('token-input').focus();
}

document.addEventListener('DOMContentLoaded', init);
if (document.readyState !== 'loading') init();
