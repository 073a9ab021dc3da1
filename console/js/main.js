// mayfly security console: the entry module. Vanilla ES2020 modules, no
// framework, no build step. CSP-strict by design: no inline code, no eval.
// This module owns the session (sign-in, sign-out), the router (#/page) and
// start-up; each page is a module with wire() for its controls and enter()
// to show it. The session is an HttpOnly cookie this code never sees.

import { $, byTid, setText } from './dom.js';
import { api, clearTimers, fail, onSessionEnd, say } from './api.js';
import { Confirm } from './confirm.js';
import { S } from './state.js';
import { Tenants, loadTenants } from './tenants.js';
import { Leases } from './leases.js';
import { Stats } from './stats.js';
import { Rules } from './rules.js';
import { Audit } from './audit.js';
import { Keys } from './keys.js';
import { Clients, Secret, Trust } from './clients.js';
import { People } from './people.js';

// ================================================================ session

async function signIn(e) {
  e.preventDefault();
  const id = byTid('signin-client-id'), secret = byTid('signin-secret'), err = byTid('signin-error');
  err.textContent = '';
  if (!id.value.trim() || !secret.value) { err.textContent = 'Enter the client ID and secret.'; return; }
  byTid('signin-submit').disabled = true;
  try {
    const s = await api('POST', '/console/session', { client_id: id.value.trim(), client_secret: secret.value });
    secret.value = '';
    await enterApp(s, true);
  } catch (x) {
    err.textContent = x.status === 401 ? 'Wrong client ID or secret, or the client is not an admin.' : x.message;
    secret.focus();
  } finally {
    byTid('signin-submit').disabled = false;
  }
}

async function signOut() {
  try { await api('DELETE', '/console/session'); } catch (e) { if (e.status !== 401) { fail(e); return; } }
  leaveApp('Signed out.');
}

async function enterApp(s, moveFocus = false) {
  S.session = s;
  S.global = s.scope === 'global';
  setText(byTid('session-who'), S.global ? `${s.client_id} (global)` : `${s.client_id} (tenant ${s.tenant})`);
  document.querySelectorAll('[data-global-only]').forEach((n) => { n.hidden = !S.global; });
  await loadTenants();
  if (!S.session) return; // the session ended while loading
  $('#signin').hidden = true;
  $('#app').hidden = false;
  route(moveFocus);
}

/** Drop everything the session showed: a new sign-in starts clean. */
function leaveApp(msg) {
  Object.assign(S, { session: null, tenant: null, page: null, gen: S.gen + 1 });
  clearTimers();
  Confirm.finish(false);
  Secret.hide();
  Leases.reset();
  Audit.reset();
  $('#app').hidden = true;
  showSignin();
  if (msg) say(msg);
}

function showSignin() {
  $('#signin').hidden = false;
  byTid('signin-client-id').focus();
}

// ================================================================ router

const PAGES = { tenants: Tenants, leases: Leases, people: People, rules: Rules, audit: Audit, keys: Keys, clients: Clients, trust: Trust };
const NAMES = Object.keys(PAGES);
/** Show the page named in the hash (#/leases); every page restarts its own polling. */
function route(moveFocus = true) {
  if (!S.session) return;
  let name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  if (!NAMES.includes(name) || (name === 'tenants' && !S.global)) {
    name = S.global ? 'tenants' : 'leases';
    history.replaceState(null, '', `#/${name}`);
  }
  S.gen += 1;
  clearTimers();
  if (S.page === 'clients' && name !== 'clients') Secret.hide();
  S.page = name;
  for (const p of NAMES) {
    byTid(`page-${p}`).hidden = p !== name;
    const link = byTid(`nav-${p}`);
    if (p === name) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  $('#no-tenant').hidden = Boolean(S.tenant) || name === 'tenants' || name === 'keys';
  PAGES[name].enter();
  if (moveFocus) $(`#h-${name}`).focus();
}

// ================================================================ wiring & boot

function wire() {
  byTid('signin-form').addEventListener('submit', signIn);
  byTid('signout').addEventListener('click', signOut);
  byTid('tenant-select').addEventListener('change', (e) => { S.tenant = e.target.value; Secret.hide(); route(false); });
  $('#skip').addEventListener('click', (e) => { e.preventDefault(); $('#main').focus(); }); // a #main hash would confuse the router
  window.addEventListener('hashchange', () => route(true));
  onSessionEnd((msg) => leaveApp(msg));
  for (const page of Object.values(PAGES)) page.wire();
  Secret.wire();
  Confirm.wire();
  Stats.build();
}

async function boot() {
  wire();
  try {
    await enterApp(await api('GET', '/console/session'));
  } catch (e) {
    showSignin();
    if (e.status !== 401) byTid('signin-error').textContent = e.message;
  }
}
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot); else boot();
