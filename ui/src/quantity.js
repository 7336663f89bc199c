// Kubernetes quantities ("500m", "8Gi", "25276502016") and how they read.

const BINARY = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 };
const DECIMAL = { n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 };

/** A quantity's value (cores for CPU, bytes for memory); NaN if unreadable. */
export function quantity(text) {
  if (text === undefined || text === null) return NaN;
  const match = /^([0-9.]+)([A-Za-z]*)$/.exec(String(text).trim());
  if (!match) return NaN;
  const number = parseFloat(match[1]);
  const suffix = match[2];
  if (!suffix) return number;
  if (BINARY[suffix]) return number * BINARY[suffix];
  if (DECIMAL[suffix]) return number * DECIMAL[suffix];
  return NaN;
}

/** Bytes in binary units: 23.5Gi. */
export function bytes(value) {
  if (!Number.isFinite(value)) return '-';
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti'];
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 100 || unit === 0 ? Math.round(value) : value.toFixed(1)}${units[unit]}`;
}

/** Cores: 250m below one core, 1.5 above. */
export function cores(value) {
  if (!Number.isFinite(value)) return '-';
  return value < 1 ? `${Math.round(value * 1000)}m` : `${+value.toFixed(2)}`;
}

/** How long ago an RFC 3339 time was: 4s, 3m, 2h, 5d. */
export function age(time, now = Date.now()) {
  const then = Date.parse(time);
  if (!Number.isFinite(then)) return '-';
  return duration((now - then) / 1000);
}

export function duration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}
