// Talking to the server and saying how it went: the fetch wrapper (the
// session is an HttpOnly cookie this code never sees; non-GET requests echo
// the readable CSRF cookie in X-CSRF-Token, which the server checks is the
// one of this session), loads and polls scoped to the current view, and the
// status line. It never touches a page's DOM.

import { byTid } from './dom.js';
import { enc, qs } from './format.js';
import { S } from './state.js';

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

function cookie(name) {
  const m = document.cookie.match(new RegExp(`(?:^|;\\s*)${name}=([^;]*)`));
  return m ? decodeURIComponent(m[1]) : null;
}

// Set by main.js: what an ended session does (back to sign-in). A hook, so
// this module needs nothing from the router.
let sessionEnded = () => {};
export function onSessionEnd(fn) { sessionEnded = fn; }

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  // `__Host-` names under an https issuer, plain ones on loopback http (see console.rs).
  const csrf = method === 'GET' ? null : (cookie('__Host-mayfly_csrf') || cookie('mayfly_csrf'));
  if (csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (_) { throw new ApiError(0, 'network', 'The server cannot be reached.'); }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const err = new ApiError(res.status, (data && data.error) || `http_${res.status}`,
    (data && data.message) || `${res.status} ${res.statusText}`);
  // An expired or revoked session anywhere sends the admin back to sign-in.
  if (res.status === 401 && S.session && !path.startsWith('/console/session')) sessionEnded('Your session has ended. Sign in again.');
  throw err;
}

/** GET for the current view: null when the admin moved on meanwhile, so late answers never paint the wrong tenant or page. */
export async function load(path) {
  const gen = S.gen;
  const data = await api('GET', path);
  return gen === S.gen ? data : null;
}

/** Follow next_cursor for up to maxPages pages. */
export async function loadPages(path, params, maxPages) {
  let items = [], cursor = null, pages = 0;
  do {
    const d = await load(path + qs({ ...params, cursor }));
    if (!d) return null;
    items = items.concat(d.items || []);
    cursor = d.next_cursor;
    pages += 1;
  } while (cursor && pages < maxPages);
  return { items, truncated: Boolean(cursor) };
}
export const tenantPath = (rest) => `/v1/tenants/${enc(S.tenant)}/${rest}`;
/** Run fn now and every `every` ms while this page stays shown: never overlapping, paused in background tabs. */
export function poll(every, fn) {
  const gen = S.gen;
  const tick = async () => {
    if (gen !== S.gen) return;
    if (!document.hidden) {
      try { await fn(); } catch (e) { if (gen === S.gen && e.status !== 401) fail(e); }
    }
    if (gen === S.gen) S.timers.push(setTimeout(tick, every));
  };
  tick();
}

export function clearTimers() { S.timers.forEach(clearTimeout); S.timers = []; }
/** Debounce typing in filters: one reload per pause, not per keystroke. */
export function debounce(fn, wait = 300) {
  let t = 0;
  return () => { clearTimeout(t); t = setTimeout(fn, wait); };
}

// ---------------------------------------------------------------- status line

let statusTimer = 0;
export function say(msg, kind = 'info') {
  const box = byTid('status');
  clearTimeout(statusTimer);
  box.className = `status status-${kind}`;
  box.textContent = msg;
  statusTimer = setTimeout(() => { box.textContent = ''; box.className = 'status'; }, kind === 'error' ? 15000 : 7000);
}
export const fail = (e) => say(e && e.message ? e.message : String(e), 'error');
