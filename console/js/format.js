// Pure formatting: query strings, times, durations, and how selectors,
// identities and actor chains read. No DOM, no state.

export const enc = encodeURIComponent;

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  const s = u.toString();
  return s ? `?${s}` : '';
}
const pad = (n) => String(n).padStart(2, '0');
export const ms = (iso) => (iso ? Date.parse(iso) : NaN);
export function fmtTime(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  if (d.getUTCFullYear() >= 9999) return 'never';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDur(sec) {
  const s = Math.max(0, Math.floor(sec));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${pad(h)}h`;
  if (h) return `${h}h ${pad(m)}m`;
  return m ? `${m}m ${pad(s % 60)}s` : `${s}s`;
}
export const fmtTtl = (s) => (s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);
export const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
export const splitList = (s) => s.split(/[\s,]+/).filter(Boolean);
/** RFC 8693: the outermost `act` is the current actor, nested ones acted before it; list them in delegation order. */
export function actorChain(act) {
  const agents = [];
  for (let a = act, depth = 0; a && typeof a === 'object' && depth < 16; a = a.act, depth += 1) {
    const name = a.sub || a.client_id || '?';
    agents.unshift(a.client_id && a.client_id !== name ? `${name} (${a.client_id})` : name);
  }
  return agents;
}

/** Who did it: an admin identity or rule creator ({client_id,…} or {system}), else the plain client. */
export function whoOf(identity, fallback) {
  if (!identity || typeof identity !== 'object') return fallback;
  return identity.client_id || (identity.system && `system: ${identity.system}`) || fallback;
}

export function selectorText(sel = {}) {
  const s = sel || {};
  if (s.workflow) return `workflow ${s.workflow}`;
  if (s.workload) return `workload ${s.workload}`;
  if (s.client_id) return `client ${s.client_id}`;
  if (s.lease_id) return `lease ${s.lease_id}`;
  return s.kid ? `key ${s.kid}` : 'whole tenant';
}
