// Formatting for display. Amounts arrive as strings (uint64 in protobuf's
// JSON mapping) and stay exact: BigInt, never a float.

export function amount(value) {
  if (value === undefined || value === null || value === '') return '0';
  let n;
  try {
    n = BigInt(value);
  } catch (e) {
    return String(value);
  }
  return n.toLocaleString('en-US');
}

export function shortHex(hex, n = 12) {
  if (!hex) return '';
  return hex.length <= n ? hex : hex.slice(0, n) + '…';
}

export function time(ms) {
  const n = Number(ms);
  if (!n) return '';
  const d = new Date(n);
  return d.toLocaleTimeString('en-GB', {hour12: false});
}

export function dateTime(ms) {
  const n = Number(ms);
  if (!n) return '';
  return new Date(n).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function percent(value, digits = 3) {
  const n = Number(value);
  if (!Number.isFinite(n)) return '';
  return n.toFixed(digits) + ' %';
}

export function number(value, digits = 2) {
  const n = Number(value);
  if (!Number.isFinite(n)) return '';
  return n.toLocaleString('en-US', {maximumFractionDigits: digits});
}

// metadata arrives as [{key, value}] in a Tip and as {key: value} in a
// request; either becomes a plain object.
export function metadataObject(metadata) {
  if (!metadata) return {};
  if (Array.isArray(metadata)) {
    const out = {};
    for (const e of metadata) {
      if (e && typeof e.key === 'string') out[e.key] = String(e.value ?? '');
    }
    return out;
  }
  return Object.assign({}, metadata);
}
