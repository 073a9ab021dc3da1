// mayfly security console. Vanilla ES2020, no framework, no build step.
// CSP-strict by design: no inline code, no eval, and every piece of server
// data reaches the DOM through textContent (never innerHTML). The session is
// an HttpOnly cookie this script never sees; non-GET requests echo the
// readable CSRF cookie (`__Host-mayfly_csrf`, or `mayfly_csrf` on loopback
// http) in X-CSRF-Token; the server checks it is the one of this session.
'use strict';

(() => {
  // ================================================================ helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const byTid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);
  const enc = encodeURIComponent;
  /** Build an element from props; strings among children become text nodes. */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null) continue;
      if (k === 'text') node.textContent = v;
      else if (k === 'testid') node.dataset.testid = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k === 'attrs') for (const [a, av] of Object.entries(v)) node.setAttribute(a, av);
      else node[k] = v;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function svg(tag, attrs = {}, text = null) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== null) node.textContent = text;
    return node;
  }

  /** Write text only when it changed: no needless reflow, no lost selection. */
  function setText(node, text) {
    const s = text === null || text === undefined || text === '' ? '—' : String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  /**
   * Fill a row's cells in place. A value is text, or a function given the
   * cell so it updates richer content (badges, buttons) itself. The first
   * cell is the row header, for screen readers.
   */
  function setCells(tr, values) {
    values.forEach((v, i) => {
      let cell = tr.cells[i];
      if (!cell) {
        cell = tr.appendChild(document.createElement(i === 0 ? 'th' : 'td'));
        if (i === 0) cell.scope = 'row';
      }
      if (typeof v === 'function') v(cell); else setText(cell, v);
    });
  }

  /**
   * Reconcile a container's children with items by key: existing nodes are
   * updated in place and kept (focus and scroll survive polling), new ones
   * created, missing ones removed; order follows the items.
   */
  function reconcile(parent, items, keyOf, render, tag = 'tr') {
    const old = new Map([...parent.children].map((n) => [n.dataset.key, n]));
    let prev = null;
    for (const item of items) {
      const key = String(keyOf(item));
      let node = old.get(key);
      if (node) old.delete(key); else node = el(tag, { dataset: { key } });
      render(node, item);
      const want = prev ? prev.nextSibling : parent.firstChild;
      if (node !== want) parent.insertBefore(node, want);
      prev = node;
    }
    old.forEach((n) => n.remove());
  }

  // Cell renderers for setCells.
  /** A status badge: created once, then only its class and text change. */
  const badge = (state, label = state) => (cell) => {
    let b = cell.firstElementChild;
    if (!b) { b = el('span'); cell.replaceChildren(b); }
    const cls = `badge badge-${String(state).replace(/[^a-z_-]/gi, '')}`;
    if (b.className !== cls) b.className = cls;
    setText(b, label);
  };

  /** Content built once (buttons): later updates leave it alone. */
  const once = (build) => (cell) => { if (!cell.firstChild) cell.append(...build()); };
  const num = (n) => (cell) => { cell.className = 'num'; setText(cell, n); };
  /** Text the fixed layout may cut: the whole of it stays in a tooltip. */
  const clipped = (text) => (cell) => { setText(cell, text); cell.title = text || ''; };
  function qs(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
    const s = u.toString();
    return s ? `?${s}` : '';
  }
  const pad = (n) => String(n).padStart(2, '0');
  const ms = (iso) => (iso ? Date.parse(iso) : NaN);
  function fmtTime(t) {
    if (t === null || t === undefined || t === '') return '—';
    const d = new Date(t);
    if (Number.isNaN(d.getTime())) return String(t);
    if (d.getUTCFullYear() >= 9999) return 'never';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDur(sec) {
    const s = Math.max(0, Math.floor(sec));
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${pad(h)}h`;
    if (h) return `${h}h ${pad(m)}m`;
    return m ? `${m}m ${pad(s % 60)}s` : `${s}s`;
  }
  const fmtTtl = (s) => (s % 3600 === 0 ? `${s / 3600}h` : s % 60 === 0 ? `${s / 60}m` : `${s}s`);
  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const splitList = (s) => s.split(/[\s,]+/).filter(Boolean);
  /** RFC 8693: the outermost `act` is the current actor, nested ones acted before it; list them in delegation order. */
  function actorChain(act) {
    const agents = [];
    for (let a = act, depth = 0; a && typeof a === 'object' && depth < 16; a = a.act, depth += 1) {
      const name = a.sub || a.client_id || '?';
      agents.unshift(a.client_id && a.client_id !== name ? `${name} (${a.client_id})` : name);
    }
    return agents;
  }

  /** Who did it: an admin identity or rule creator ({client_id,…} or {system}), else the plain client. */
  function whoOf(identity, fallback) {
    if (!identity || typeof identity !== 'object') return fallback;
    return identity.client_id || (identity.system && `system: ${identity.system}`) || fallback;
  }

  function selectorText(sel = {}) {
    const s = sel || {};
    if (s.workflow) return `workflow ${s.workflow}`;
    if (s.workload) return `workload ${s.workload}`;
    if (s.client_id) return `client ${s.client_id}`;
    if (s.lease_id) return `lease ${s.lease_id}`;
    return s.kid ? `key ${s.kid}` : 'whole tenant';
  }

  // ================================================================ state & API

  // Everything lives in memory only: nothing in storage, nothing in the URL but the page name.
  const S = { session: null, global: false, tenant: null, tenants: [], page: null, gen: 0, timers: [] };
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  function cookie(name) {
    const m = document.cookie.match(new RegExp(`(?:^|;\\s*)${name}=([^;]*)`));
    return m ? decodeURIComponent(m[1]) : null;
  }

  async function api(method, path, body) {
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
    if (res.status === 401 && S.session && !path.startsWith('/console/session')) leaveApp('Your session has ended. Sign in again.');
    throw err;
  }

  /** GET for the current view: null when the admin moved on meanwhile, so late answers never paint the wrong tenant or page. */
  async function load(path) {
    const gen = S.gen;
    const data = await api('GET', path);
    return gen === S.gen ? data : null;
  }

  /** Follow next_cursor for up to maxPages pages. */
  async function loadPages(path, params, maxPages) {
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
  const tenantPath = (rest) => `/v1/tenants/${enc(S.tenant)}/${rest}`;
  /** Run fn now and every `every` ms while this page stays shown: never overlapping, paused in background tabs. */
  function poll(every, fn) {
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

  function clearTimers() { S.timers.forEach(clearTimeout); S.timers = []; }
  /** Debounce typing in filters: one reload per pause, not per keystroke. */
  function debounce(fn, wait = 300) {
    let t = 0;
    return () => { clearTimeout(t); t = setTimeout(fn, wait); };
  }

  // ================================================================ status

  let statusTimer = 0;
  function say(msg, kind = 'info') {
    const box = byTid('status');
    clearTimeout(statusTimer);
    box.className = `status status-${kind}`;
    box.textContent = msg;
    statusTimer = setTimeout(() => { box.textContent = ''; box.className = 'status'; }, kind === 'error' ? 15000 : 7000);
  }
  const fail = (e) => say(e && e.message ? e.message : String(e), 'error');

  // ================================================================ confirm dialog

  /** One modal for every consequential action: says exactly what ends, asks for a reason, runs it, reports errors in place. */
  const Confirm = {
    pending: null,
    busy: false,
    wire() {
      const dlg = byTid('confirm-dialog');
      $('#confirm-form').addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
      byTid('confirm-no').addEventListener('click', () => this.finish(false));
      // Escape cancels, unless the request is already on its way.
      dlg.addEventListener('cancel', (e) => { e.preventDefault(); if (!this.busy) this.finish(false); });
      // Browsers may close a modal on a repeated Escape regardless: settle the promise then too.
      dlg.addEventListener('close', () => { if (this.pending) this.finish(false); });
    },
    /** Resolves true once run() succeeded, false if the admin backed out. */
    open({ title, text, reason = false, yes = 'Confirm', run }) {
      if (this.pending) this.finish(false);
      setText(byTid('confirm-title'), title);
      setText(byTid('confirm-text'), text);
      setText(byTid('confirm-yes'), yes);
      byTid('confirm-error').textContent = '';
      $('#confirm-reason-field').hidden = !reason;
      const input = byTid('confirm-reason');
      input.value = 'revoked from the console';
      return new Promise((resolve) => {
        this.pending = { reason, run, resolve, opener: document.activeElement };
        byTid('confirm-dialog').showModal();
        if (reason) { input.focus(); input.select(); } else byTid('confirm-no').focus();
      });
    },
    async submit() {
      const p = this.pending;
      if (!p || this.busy) return;
      const reason = byTid('confirm-reason').value.trim();
      if (p.reason && (reason.length < 1 || reason.length > 500)) {
        byTid('confirm-error').textContent = 'Give a reason (1 to 500 characters): it goes into the audit log.';
        byTid('confirm-reason').focus();
        return;
      }
      this.setBusy(true);
      try { await p.run(reason); this.finish(true); } catch (e) { byTid('confirm-error').textContent = e.message; } finally { this.setBusy(false); }
    },
    setBusy(on) {
      this.busy = on;
      byTid('confirm-yes').disabled = on;
      byTid('confirm-no').disabled = on;
    },
    finish(ok) {
      const p = this.pending;
      if (!p) return;
      this.pending = null;
      byTid('confirm-dialog').close();
      // Focus goes back where the admin was; if that control vanished, to the page heading.
      const back = p.opener && p.opener.isConnected && !p.opener.disabled ? p.opener : $(`#h-${S.page}`);
      if (back) back.focus();
      p.resolve(ok);
    },
  };

  /** Confirm, then refresh the page that asked (after: a function run on success). */
  const confirmThen = (opts, after) => Confirm.open(opts).then((ok) => ok && after()).catch(fail);
  /** Revoke by selector ({} = the whole tenant), behind the confirm dialog. */
  function revoke(selector, text) {
    const tenant = S.tenant;
    confirmThen({
      title: 'Revoke tokens', text, reason: true, yes: 'Revoke',
      run: async (reason) => {
        const rule = await api('POST', `/v1/tenants/${enc(tenant)}/revocations`, { ...selector, reason });
        say(`Revoked ${selectorText(rule.selector)} in tenant ${tenant}: in force now on every replica; lease rows are marked in the background.`, 'ok');
      },
    }, () => (S.page === 'leases' ? Leases : Rules).refresh()); // at once, not at the next poll
  }

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

  async function loadTenants() {
    try { S.tenants = (await api('GET', '/console/tenants')).items || []; } catch (e) { if (e.status !== 401) fail(e); S.tenants = []; }
    const own = S.session && S.session.tenant;
    if (!S.global && own && !S.tenants.some((t) => t.id === own)) S.tenants = [{ id: own, name: own }];
    fillTenantSelect();
  }

  function fillTenantSelect() {
    const select = byTid('tenant-select');
    if (!S.tenants.some((t) => t.id === S.tenant)) S.tenant = S.tenants.length ? S.tenants[0].id : null;
    reconcile(select, S.tenants, (t) => t.id, (o, t) => {
      o.value = t.id;
      setText(o, t.name && t.name !== t.id ? `${t.id} — ${t.name}` : t.id);
    }, 'option');
    select.value = S.tenant || '';
    select.disabled = S.tenants.length === 0;
  }

  // ================================================================ router

  const PAGES = ['tenants', 'leases', 'rules', 'audit', 'keys', 'clients'];
  /** Show the page named in the hash (#/leases); every page restarts its own polling. */
  function route(moveFocus = true) {
    if (!S.session) return;
    let name = (location.hash.match(/^#\/(\w+)/) || [])[1];
    if (!PAGES.includes(name) || (name === 'tenants' && !S.global)) {
      name = S.global ? 'tenants' : 'leases';
      history.replaceState(null, '', `#/${name}`);
    }
    S.gen += 1;
    clearTimers();
    if (S.page === 'clients' && name !== 'clients') Secret.hide();
    S.page = name;
    for (const p of PAGES) {
      byTid(`page-${p}`).hidden = p !== name;
      const link = byTid(`nav-${p}`);
      if (p === name) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
    }
    $('#no-tenant').hidden = Boolean(S.tenant) || name === 'tenants' || name === 'keys';
    ({ tenants: Tenants, leases: Leases, rules: Rules, audit: Audit, keys: Keys, clients: Clients })[name].enter();
    if (moveFocus) $(`#h-${name}`).focus();
  }

  // ================================================================ tenants (global admins)

  const Tenants = {
    enter() { poll(5000, () => this.refresh()); },
    async refresh() {
      const d = await load('/console/tenants');
      if (!d) return;
      S.tenants = d.items || [];
      fillTenantSelect();
      reconcile($('#tenants-body'), S.tenants, (t) => t.id, (tr, t) => {
        Object.assign(tr.dataset, { testid: 'tenant-row', tenant: t.id });
        tr.classList.toggle('is-current', t.id === S.tenant);
        setCells(tr, [t.id, t.name, num(t.live_leases), once(() => [el('button', {
          type: 'button', className: 'btn btn-sm', text: 'View leases', dataset: { action: 'open' }, attrs: { 'aria-label': `View leases of ${t.id}` },
        })])]);
      });
    },
    onClick(e) {
      const b = e.target.closest('button[data-action="open"]');
      if (!b) return;
      S.tenant = b.closest('tr').dataset.tenant;
      byTid('tenant-select').value = S.tenant;
      location.hash = '#/leases';
    },
  };

  // ================================================================ live leases

  const Leases = {
    rows: new Map(), // lease id -> { tr, lease, state, seenActive }
    epoch: 0, // bumps on reset: answers to requests sent before it are dropped
    seq: 0, // request order, so an older answer never overwrites a newer one
    applied: 0,
    CAP: 300, // ended rows kept for context
    enter() {
      this.reset();
      poll(2000, () => this.refresh());
      poll(1000, () => this.tick());
      poll(10000, () => Stats.refresh());
    },
    reset() {
      this.epoch += 1;
      this.rows.clear();
      $('#lease-body').replaceChildren();
      this.counts();
      setText($('#leases-meta'), 'Loading…');
      $('#lease-empty').hidden = true;
    },
    filters() {
      const v = (id) => byTid(id).value.trim();
      return { workflow: v('filter-workflow'), workload: v('filter-workload'), client_id: v('filter-client'), actor: v('filter-actor') };
    },
    showInactive() { return byTid('filter-inactive').checked; },
    /**
     * Poll the active list (and recent inactive ones when asked). A row that
     * was active and is no longer listed has ended: revoked if it had time
     * left, expired otherwise. Rows are updated in place, never rebuilt.
     */
    async refresh() {
      if (!S.tenant) return;
      const epoch = this.epoch, seq = ++this.seq, path = tenantPath('leases'), f = this.filters();
      const live = await loadPages(path, { ...f, active: 'true', limit: 500 }, 4);
      if (!live) return;
      const recent = this.showInactive() ? await loadPages(path, { ...f, active: 'false', limit: 100 }, 1) : { items: [] };
      // Filters changed, or a newer answer already painted: this one is stale.
      if (!recent || epoch !== this.epoch || seq < this.applied) return;
      this.applied = seq;
      const now = Date.now(), seen = new Set();
      for (const l of live.items) { seen.add(l.id); this.upsert(l, 'active'); }
      for (const l of recent.items) {
        if (seen.has(l.id)) continue;
        seen.add(l.id);
        this.upsert(l, l.revoked_at || l.revocation_id || ms(l.expires_at) > now ? 'revoked' : 'expired');
      }
      for (const [id, r] of this.rows) {
        if (seen.has(id)) continue;
        // Past the page limit a missing lease proves nothing: drop it rather than call it revoked.
        if (r.state === 'active' && live.truncated) this.drop(id);
        else if (r.state === 'active') this.setState(r, ms(r.lease.expires_at) > now ? 'revoked' : 'expired');
        else if (!r.seenActive && !this.showInactive()) this.drop(id);
      }
      const ended = [...this.rows.values()].filter((r) => r.state !== 'active');
      ended.slice(0, Math.max(0, ended.length - this.CAP)).forEach((r) => this.drop(r.lease.id));
      this.counts();
      setText($('#leases-meta'), `${plural(live.items.length, 'live lease')}${live.truncated ? ' (more exist: narrow the filters)' : ''}`
        + ` · updated ${fmtTime(now).slice(11)}`);
      $('#lease-empty').hidden = this.rows.size > 0;
    },
    upsert(l, state) {
      let r = this.rows.get(l.id);
      if (!r) {
        r = { tr: this.newRow(l), lease: l, state: null, seenActive: false };
        this.rows.set(l.id, r);
        this.place(r);
      }
      r.lease = l;
      if (state === 'active') r.seenActive = true;
      this.fill(r);
      this.setState(r, state);
    },
    /** Oldest first: new leases arrive at the bottom, so the rows being read do not move. */
    place(r) {
      const t = ms(r.lease.issued_at), body = $('#lease-body');
      const last = body.lastElementChild;
      if (!last || ms(this.rows.get(last.dataset.leaseId).lease.issued_at) <= t) { body.append(r.tr); return; }
      body.insertBefore(r.tr, [...body.rows].find((tr) => ms(this.rows.get(tr.dataset.leaseId).lease.issued_at) > t));
    },
    drop(id) {
      const r = this.rows.get(id);
      if (r) { r.tr.remove(); this.rows.delete(id); }
    },
    newRow(l) {
      const tr = el('tr', { testid: 'lease-row', dataset: { leaseId: l.id } });
      // Visible word short ("workflow"); the accessible name says it all ("Revoke workflow release").
      const btn = (action, target) => el('button', {
        type: 'button', className: 'btn btn-xs', testid: `revoke-${action}`, dataset: { action }, title: `Revoke ${action} ${target}`,
      }, el('span', { className: 'sr-only', text: 'Revoke ' }), action, el('span', { className: 'sr-only', text: ` ${target}` }));
      setCells(tr, ['', (c) => c.append(el('span', { className: 'main' }), el('span', { className: 'sub', hidden: true })), '', '', '', '', '',
        once(() => [el('div', { className: 'btn-group', attrs: { role: 'group', 'aria-label': 'Revoke' } },
          btn('lease', l.id), btn('workflow', l.workflow), btn('workload', l.workload), btn('client', l.client_id))])]);
      Object.assign(tr.cells[5], { className: 'num ttl' });
      tr.cells[5].dataset.testid = 'ttl';
      tr.cells[6].dataset.testid = 'state';
      return tr;
    },
    fill({ lease: l, tr }) {
      Object.assign(tr.dataset, { workflow: l.workflow, workload: l.workload, clientId: l.client_id, resource: l.resource });
      const agents = actorChain(l.actor);
      const via = agents.length ? `for ${l.workload} via ${agents.join(' → ')}` : '';
      const [wf, wl, cl, res, sc] = tr.cells;
      clipped(l.workflow)(wf);
      setText(wl.firstChild, l.workload);
      wl.lastChild.hidden = !via;
      if (via) setText(wl.lastChild, via);
      wl.title = via ? `${l.workload}, ${via}` : l.workload;
      clipped(l.client_id)(cl);
      clipped(l.resource)(res);
      clipped((l.scopes || []).join(' '))(sc);
    },
    setState(r, state) {
      if (r.state === state) return;
      r.state = state;
      r.tr.dataset.state = state;
      badge(state)(r.tr.cells[6]);
      byTid('revoke-lease', r.tr).disabled = state !== 'active';
      this.ttl(r, Date.now());
    },
    ttl(r, now) {
      const left = (ms(r.lease.expires_at) - now) / 1000;
      let text = fmtDur(left);
      if (r.state === 'revoked') text = '—';
      else if (r.state === 'expired' || left <= 0) text = 'expired';
      setText(r.tr.cells[5], text);
    },
    /** Every second: count down, and end leases whose time ran out without waiting for the poll. */
    tick() {
      const now = Date.now();
      let changed = false;
      for (const r of this.rows.values()) {
        if (r.state !== 'active') continue;
        if (ms(r.lease.expires_at) <= now) { this.setState(r, 'expired'); changed = true; } else this.ttl(r, now);
      }
      if (changed) this.counts();
    },
    counts() {
      const fillCount = (body, field) => {
        const m = new Map();
        for (const r of this.rows.values()) if (r.state === 'active') m.set(r.lease[field], (m.get(r.lease[field]) || 0) + 1);
        // Sorted by name, not count, so rows do not swap places as the numbers move.
        reconcile(body, [...m.entries()].sort((a, b) => a[0].localeCompare(b[0])), (x) => x[0], (tr, [name, n]) => {
          tr.dataset[field] = name;
          setCells(tr, [clipped(name), num(n)]);
        });
      };
      fillCount($('#count-workflow-body'), 'workflow');
      fillCount($('#count-resource-body'), 'resource');
    },
    onClick(e) {
      const b = e.target.closest('button[data-action]');
      const r = b && this.rows.get(b.closest('tr').dataset.leaseId);
      if (!r) return;
      const l = r.lease, t = S.tenant, kind = b.dataset.action;
      if (kind === 'lease') {
        revoke({ lease_id: l.id }, `End the token ${l.id} (workflow ${l.workflow}, workload ${l.workload}, client ${l.client_id}) in tenant ${t}. No other token is affected.`);
        return;
      }
      const field = kind === 'client' ? 'client_id' : kind;
      let n = 0;
      for (const x of this.rows.values()) if (x.state === 'active' && x.lease[field] === l[field]) n += 1;
      revoke({ [field]: l[field] }, `End every token of ${kind} ${l[field]} in tenant ${t} minted before now `
        + `(${plural(n, 'live token')} listed here). Tokens minted afterwards are not affected.`);
    },
  };

  // ================================================================ stats chart

  /** Minted and denied per minute as SVG bars, built once and updated in place. The legend is HTML text beside it. */
  const Stats = {
    W: 600, H: 150, L: 34, T: 18, B: 18, N: 30,
    bars: [],
    build() {
      const { W, H, L, B, N } = this;
      const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': 'stats-title', class: 'chart', 'data-testid': 'stats-chart' });
      root.append(svg('title', { id: 'stats-title' }, 'Tokens minted and denied per minute, last 30 minutes: no data yet.'));
      // A text legend, so colour is never the only cue.
      [['minted', W - 140], ['denied', W - 70]].forEach(([k, x]) => root.append(
        svg('rect', { x, y: 2, width: 9, height: 9, class: `bar-${k}` }), svg('text', { x: x + 13, y: 10, class: 'chart-text' }, k)));
      this.maxLabel = svg('text', { x: L - 6, y: this.T + 8, 'text-anchor': 'end', class: 'chart-text' }, '1');
      root.append(this.maxLabel, svg('text', { x: L - 6, y: H - B, 'text-anchor': 'end', class: 'chart-text' }, '0'),
        svg('text', { x: L, y: H - 3, class: 'chart-text' }, '−30 min'),
        svg('text', { x: W - 2, y: H - 3, 'text-anchor': 'end', class: 'chart-text' }, 'now'),
        svg('line', { x1: L, x2: W, y1: H - B, y2: H - B, class: 'chart-axis' }));
      const slot = (W - L) / N;
      for (let i = 0; i < N; i += 1) {
        this.bars.push(['minted', 'denied'].map((cls, j) => {
          const r = svg('rect', { x: L + i * slot + 1 + j * (slot / 2 - 1), y: H - B, width: slot / 2 - 2, height: 0, class: `bar-${cls}` });
          r.append(svg('title'));
          root.append(r);
          return r;
        }));
      }
      $('#stats-box').append(root);
    },
    async refresh() {
      if (!S.tenant) return;
      const d = await load(`/console/stats${qs({ tenant: S.tenant })}`);
      if (d) this.draw(d.minutes || []);
    },
    draw(minutes) {
      const { H, T, B, N } = this;
      const m = minutes.slice(-N), offset = N - m.length;
      const max = Math.max(1, ...m.map((x) => Math.max(x.minted || 0, x.denied || 0)));
      this.maxLabel.textContent = String(max);
      const sum = { minted: 0, denied: 0 };
      this.bars.forEach((pair, i) => {
        const row = m[i - offset];
        ['minted', 'denied'].forEach((k, j) => {
          const v = row ? row[k] || 0 : 0, h = Math.round((v / max) * (H - T - B));
          pair[j].setAttribute('y', String(H - B - h));
          pair[j].setAttribute('height', String(h));
          pair[j].firstChild.textContent = row ? `${fmtTime(row.minute).slice(11, 16)}: ${v} ${k}` : '';
          sum[k] += v;
        });
      });
      const text = `Last 30 minutes: ${sum.minted} minted, ${sum.denied} denied; busiest minute ${max}.`;
      $('#stats-title').textContent = `Tokens per minute. ${text}`;
      setText($('#stats-summary'), text);
    },
  };

  // ================================================================ revocation rules

  const Rules = {
    enter() { poll(3000, () => this.refresh()); },
    async refresh() {
      if (!S.tenant) return;
      const d = await load(tenantPath('revocations?limit=200'));
      if (!d) return;
      const items = d.items || [];
      reconcile($('#rules-body'), items, (r) => r.id, (tr, r) => {
        Object.assign(tr.dataset, { testid: 'rule-row', ruleId: r.id, marked: String(Boolean(r.marked_at)) });
        const issued = ms(r.issued_before) >= Date.UTC(9999, 0, 1) ? 'every token, future ones too' : fmtTime(r.issued_before);
        setCells(tr, [clipped(selectorText(r.selector)), clipped(r.reason), whoOf(r.created_by, '—'), issued, num(r.leases_revoked),
          r.marked_at ? fmtTime(r.marked_at) : badge('marking', 'marking…')]);
      });
      $('#rules-empty').hidden = items.length > 0;
    },
    revokeTenant() {
      if (!S.tenant) return;
      const t = S.tenants.find((x) => x.id === S.tenant);
      const n = t && typeof t.live_leases === 'number' ? ` (${plural(t.live_leases, 'live token')} now)` : '';
      revoke({}, `End every token in tenant ${S.tenant} minted before now${n}, whatever its workflow, workload or client. Tokens minted afterwards are not affected.`);
    },
  };

  // ================================================================ audit log

  const Audit = {
    cursor: null, done: false, loading: false, epoch: 0, observer: null,
    events: new Map(),
    wire() {
      // Infinite scroll; the Load more button stays as the keyboard and no-IntersectionObserver fallback.
      if (!('IntersectionObserver' in window)) return;
      this.observer = new IntersectionObserver((entries) => {
        if (S.page === 'audit' && entries.some((x) => x.isIntersecting)) this.more();
      }, { rootMargin: '200px' });
      this.observer.observe(byTid('audit-more'));
    },
    enter() { this.reset(); this.verify(); this.more(); },
    reset() {
      Object.assign(this, { cursor: null, done: false, loading: false, epoch: this.epoch + 1 });
      this.events.clear();
      $('#audit-body').replaceChildren();
      setText($('#audit-end'), ' ');
      byTid('audit-load-more').hidden = false;
    },
    params() {
      const v = (id) => byTid(id).value.trim();
      return { action: v('audit-filter-action'), workflow: v('audit-filter-workflow'), client_id: v('audit-filter-client') };
    },
    async more() {
      if (this.loading || this.done || !S.tenant) return;
      const epoch = this.epoch, button = byTid('audit-load-more');
      let ok = false;
      this.loading = true;
      button.disabled = true;
      try {
        const d = await load(tenantPath(`audit${qs({ ...this.params(), limit: 50, cursor: this.cursor })}`));
        if (!d || epoch !== this.epoch) return;
        for (const ev of d.items || []) {
          if (this.events.has(ev.id)) continue;
          this.events.set(ev.id, ev);
          $('#audit-body').append(this.row(ev));
        }
        this.cursor = d.next_cursor;
        this.done = !d.next_cursor;
        ok = true;
      } catch (e) {
        if (epoch === this.epoch) fail(e);
      } finally {
        if (epoch === this.epoch) {
          this.loading = false;
          button.disabled = this.done;
          button.hidden = this.done;
          setText($('#audit-end'), this.done ? (this.events.size ? 'End of the audit log.' : 'No matching events.') : ' ');
          // A short page leaves the sentinel in view, and the observer only fires on changes: keep loading.
          const top = byTid('audit-more').getBoundingClientRect().top;
          if (ok && !this.done && this.observer && S.page === 'audit' && top < window.innerHeight + 200) setTimeout(() => this.more(), 0);
        }
      }
    },
    row(ev) {
      const tr = el('tr', { testid: 'audit-row', tabIndex: 0, dataset: { eventId: ev.id, action: ev.action || '' }, attrs: { 'aria-expanded': 'false' } });
      const agents = actorChain(ev.actor);
      setCells(tr, [fmtTime(ev.at), ev.action, badge(ev.outcome || 'unknown'), clipped(whoOf(ev.admin, ev.client_id)),
        clipped([ev.workflow, ev.workload].filter(Boolean).join(' / ')), clipped(agents.length ? `via ${agents.join(' → ')}` : '')]);
      return tr;
    },
    /** Show or hide the event's full JSON in a row right below it. */
    toggle(tr) {
      const open = tr.getAttribute('aria-expanded') === 'true';
      tr.setAttribute('aria-expanded', String(!open));
      if (open) {
        const next = tr.nextElementSibling;
        if (next && next.classList.contains('detail')) next.remove();
        return;
      }
      const pre = el('pre', { testid: 'audit-json', className: 'json', tabIndex: 0, text: JSON.stringify(this.events.get(tr.dataset.eventId), null, 2) });
      tr.after(el('tr', { className: 'detail' }, el('td', { colSpan: 6 }, pre)));
    },
    onClick(e) {
      const tr = e.target.closest('tr[data-testid="audit-row"]');
      if (tr) this.toggle(tr);
    },
    onKey(e) {
      if ((e.key !== 'Enter' && e.key !== ' ') || !e.target.matches('tr[data-testid="audit-row"]')) return;
      e.preventDefault();
      this.toggle(e.target);
    },
    async verify() {
      const out = byTid('audit-verify');
      out.dataset.state = 'pending';
      setText(out, 'chain verification: checking…');
      try {
        const v = await load('/v1/audit/verify');
        if (!v) return;
        out.dataset.state = v.ok ? 'ok' : 'broken';
        setText(out, v.ok ? `chain ok — ${plural(v.checked, 'event')} checked`
          : `chain BROKEN — first bad event ${v.first_broken || 'unknown'}${v.problem ? `: ${v.problem}` : ''} (${v.checked} checked)`);
      } catch (e) {
        out.dataset.state = e.status === 403 ? 'na' : 'error';
        setText(out, e.status === 403 ? 'chain verification: global admins only' : `chain verification failed: ${e.message}`);
      }
    },
  };

  // ================================================================ signing keys

  const Keys = {
    enter() { poll(30000, () => this.refresh()); },
    async refresh() {
      let d;
      try {
        d = await load('/v1/keys');
      } catch (e) {
        if (e.status !== 403) throw e;
        $('#keys-note').hidden = false;
        setText($('#keys-note'), 'Signing keys are managed by global admins.');
        setText(byTid('next-rotation'), 'Next rotation: visible to global admins only');
        return;
      }
      if (!d) return;
      $('#keys-note').hidden = true;
      const keys = (d.items || []).slice().sort((a, b) => ms(a.created_at) - ms(b.created_at));
      this.timeline(keys);
      this.table(keys);
      const next = keys.find((k) => k.state === 'next'), at = next ? ms(next.activates_at) : NaN, now = Date.now();
      setText(byTid('next-rotation'), Number.isNaN(at) ? 'Next rotation: none scheduled'
        : `Next rotation: ${fmtTime(at)} (${at > now ? `in ${fmtDur((at - now) / 1000)}` : 'due now'}; key ${next.kid})`);
    },
    /** One bar per key on a shared time axis: published but not signing, signing, retired (still published). */
    timeline(keys) {
      const now = Date.now(), ok = (x) => !Number.isNaN(x), end = (x) => (ok(x) ? x : now);
      const spans = keys.map((k) => {
        const created = ms(k.created_at), on = ok(ms(k.activated_at)) ? ms(k.activated_at) : ms(k.activates_at);
        const off = ms(k.retired_at), gone = ms(k.removed_at), segs = [];
        if (ok(created)) segs.push(['pending', created, ok(on) ? on : end(off)]);
        if (ok(on) && k.state !== 'next') segs.push(['active', on, end(off)]);
        if (ok(off)) segs.push(['retired', off, end(gone)]);
        return { k, segs: segs.filter((g) => g[2] > g[1]) }; // a key that signed from birth has no pending span
      });
      const times = spans.flatMap((s) => s.segs.flatMap((g) => [g[1], g[2]])).concat(now);
      let lo = Math.min(...times), hi = Math.max(...times, lo + 3600e3);
      const margin = (hi - lo) * 0.03;
      lo -= margin; hi += margin;
      const pct = (x) => ((x - lo) / (hi - lo)) * 100;
      const place = (node, a, b) => { node.style.left = `${pct(a)}%`; if (b !== undefined) node.style.width = `${Math.max(0.6, pct(b) - pct(a))}%`; return node; };
      const label = { pending: 'published, not signing', active: 'signing', retired: 'retired' };
      reconcile(byTid('key-timeline'), spans, (s) => s.k.kid, (li, { k, segs }) => {
        Object.assign(li.dataset, { testid: 'key-item', state: k.state, kid: k.kid });
        if (!li.firstChild) li.append(el('span', { className: 'tl-label' }), el('div', { className: 'tl-track' }));
        setText(li.firstChild, `${k.kid} · ${k.state}`);
        li.firstChild.title = k.kid;
        li.lastChild.replaceChildren(...segs.map(([kind, a, b]) => place(el('span', {
          className: `tl-seg seg-${kind}`, title: `${label[kind]}: ${fmtTime(a)} → ${b === now ? 'now' : fmtTime(b)}`,
        }), a, b)), place(el('span', { className: 'tl-now', attrs: { 'aria-hidden': 'true' } }), now));
      }, 'li');
      setText($('#axis-start'), fmtTime(lo).slice(0, 16));
      setText($('#axis-end'), fmtTime(hi).slice(0, 16));
    },
    table(keys) {
      reconcile($('#keys-body'), keys.slice().reverse(), (k) => k.kid, (tr, k) => {
        Object.assign(tr.dataset, { testid: 'key-row', kid: k.kid, state: k.state });
        const t = (iso) => fmtTime(iso).slice(0, 16); // minutes are enough here, and keep the columns narrow
        setCells(tr, [clipped(k.kid), k.alg, badge(k.state), k.published ? 'yes' : 'no', t(k.created_at),
          k.activated_at ? t(k.activated_at) : k.activates_at && `due ${t(k.activates_at)}`, t(k.retired_at), t(k.removed_at), num(k.tokens_signed),
          once(() => [el('button', { type: 'button', className: 'btn btn-xs btn-danger', testid: 'key-revoke', dataset: { kid: k.kid }, text: 'Revoke…', attrs: { 'aria-label': `Revoke key ${k.kid}` } })])]);
        byTid('key-revoke', tr).hidden = !S.global || ['revoked', 'removed'].includes(k.state);
      });
    },
    rotate() {
      confirmThen({
        title: 'Rotate signing keys', yes: 'Rotate',
        text: 'Make the next key sign from now on and retire the current one. Tokens already signed stay valid until they expire; verifiers find both keys in the JWKS.',
        run: async () => { const r = await api('POST', '/v1/keys/rotate', {}); say(`Rotated: key ${r.active} signs now.`, 'ok'); },
      }, () => this.refresh());
    },
    onClick(e) {
      const b = e.target.closest('button[data-testid="key-revoke"]');
      if (!b) return;
      const kid = b.dataset.kid;
      confirmThen({
        title: 'Revoke signing key', reason: true, yes: 'Revoke key',
        text: `Revoke key ${kid}: every token it signed, in every tenant, stops being valid at once, and it leaves the JWKS. This cannot be undone.`,
        run: async (reason) => { await api('POST', `/v1/keys/${enc(kid)}/revoke`, { reason }); say(`Key ${kid} revoked.`, 'ok'); },
      }, () => this.refresh());
    },
  };

  // ================================================================ secrets, shown once

  const Secret = {
    show(clientId, secret, note) {
      setText($('#secret-client'), clientId);
      $('#secret-value').textContent = secret;
      setText($('#secret-note'), note);
      byTid('secret-once').hidden = false;
      byTid('secret-copy').focus();
    },
    /** Forget the secret: it must not linger in the DOM once the admin is done with it. */
    hide() {
      $('#secret-value').textContent = '';
      byTid('secret-once').hidden = true;
    },
    copy() {
      const text = $('#secret-value').textContent;
      (navigator.clipboard ? navigator.clipboard.writeText(text) : Promise.reject(new Error('no clipboard'))).then(() => say('Secret copied to the clipboard.', 'ok'),
        () => say('Copying failed: select the secret and copy it by hand.', 'error'));
    },
  };

  // ================================================================ clients & resources

  const Clients = {
    resources: [],
    enter() { this.refresh().catch(fail); },
    async refresh() {
      if (!S.tenant) return;
      const [c, r] = await Promise.all([load(tenantPath('clients?limit=1000')), load(tenantPath('resources?limit=1000'))]);
      if (!c || !r) return;
      this.resources = r.items || [];
      reconcile($('#clients-body'), c.items || [], (x) => x.client_id, (tr, x) => {
        Object.assign(tr.dataset, { testid: 'client-row', clientId: x.client_id, disabled: String(Boolean(x.disabled)) });
        const grants = (x.grants || []).map((g) => `${g.resource}: ${(g.scopes || []).join(' ')}`).join('; ');
        setCells(tr, [clipped(x.client_id), clipped(x.name), x.kind, clipped((x.workflows || []).join(', ')), clipped(grants),
          badge(x.disabled ? 'disabled' : 'enabled'), once(() => [el('div', { className: 'btn-group' },
            el('button', { type: 'button', className: 'btn btn-xs btn-danger', testid: 'client-disable', dataset: { action: 'disable' }, text: 'Disable…', attrs: { 'aria-label': `Disable client ${x.client_id}` } }),
            el('button', { type: 'button', className: 'btn btn-xs', testid: 'client-rotate', dataset: { action: 'rotate' }, text: 'New secret…', attrs: { 'aria-label': `New secret for client ${x.client_id}` } }))])]);
        byTid('client-disable', tr).disabled = Boolean(x.disabled);
      });
      reconcile($('#resources-body'), this.resources, (x) => x.id || x.uri, (tr, x) => {
        Object.assign(tr.dataset, { testid: 'resource-row', uri: x.uri });
        setCells(tr, [clipped(x.uri), clipped(x.name), clipped((x.scopes || []).join(' ')),
          `${fmtTtl(x.default_ttl_seconds || 0)} / ${fmtTtl(x.max_ttl_seconds || 0)}`]);
      });
      const select = byTid('client-form-resource'), keep = select.value;
      reconcile(select, [{ uri: '' }, ...this.resources], (x) => x.uri, (o, x) => {
        o.value = x.uri;
        setText(o, x.uri ? (x.name && x.name !== x.uri ? `${x.name} — ${x.uri}` : x.uri) : '(no grant)');
      }, 'option');
      select.value = this.resources.some((x) => x.uri === keep) ? keep : '';
    },
    onClick(e) {
      const b = e.target.closest('button[data-action]');
      if (!b) return;
      const id = b.closest('tr').dataset.clientId, t = S.tenant, path = tenantPath(`clients/${enc(id)}`);
      if (b.dataset.action === 'disable') {
        confirmThen({
          title: 'Disable client', yes: 'Disable',
          text: `Disable client ${id} in tenant ${t}. It can no longer mint, and every token it holds ends at once.`,
          run: async () => { await api('PATCH', path, { disabled: true }); say(`Client ${id} disabled.`, 'ok'); },
        }, () => this.refresh());
        return;
      }
      confirmThen({
        title: 'Rotate client secret', yes: 'Issue new secret',
        text: `Issue a new secret for client ${id} in tenant ${t}. It is shown once; the current secret keeps working for a grace period.`,
        run: async () => {
          const r = await api('POST', `${path}/secrets`, {});
          Secret.show(r.client_id, r.client_secret, `The previous secret works until ${fmtTime(r.previous_secret_expires_at)}.`);
        },
      }, () => byTid('secret-copy').focus());
    },
    /** Prefill the grant's scopes with all the chosen resource defines; the admin narrows them. */
    onResourcePick() {
      const res = this.resources.find((x) => x.uri === byTid('client-form-resource').value);
      byTid('client-form-scopes').value = res ? (res.scopes || []).join(', ') : '';
    },
    onKindPick() { byTid('client-form-workflows').disabled = byTid('client-form-kind').value === 'resource_server'; },
    async createClient(e) {
      e.preventDefault();
      if (!S.tenant) return;
      const kind = byTid('client-form-kind').value, id = byTid('client-form-id').value.trim(), body = { kind };
      if (id) body.client_id = id;
      if (kind !== 'resource_server') {
        body.workflows = splitList(byTid('client-form-workflows').value);
        if (!body.workflows.length) { say('Name at least one workflow (or * for any).', 'error'); byTid('client-form-workflows').focus(); return; }
      }
      const resource = byTid('client-form-resource').value, scopes = splitList(byTid('client-form-scopes').value);
      if (resource && !scopes.length) { say('Pick at least one scope for the grant.', 'error'); byTid('client-form-scopes').focus(); return; }
      body.grants = resource ? [{ resource, scopes }] : [];
      try {
        const r = await api('POST', tenantPath('clients'), body);
        e.target.reset();
        this.onKindPick();
        if (r.client_secret) Secret.show(r.client_id, r.client_secret, 'Hand it to the workload now: it cannot be shown again.');
        say(`Client ${r.client_id} created.`, 'ok');
        await this.refresh();
      } catch (x) { fail(x); }
    },
    async createResource(e) {
      e.preventDefault();
      if (!S.tenant) return;
      const body = { uri: byTid('resource-form-uri').value.trim(), scopes: splitList(byTid('resource-form-scopes').value) };
      const name = byTid('resource-form-name').value.trim();
      if (name) body.name = name;
      try {
        const r = await api('POST', tenantPath('resources'), body);
        e.target.reset();
        say(`Resource ${r.uri} created.`, 'ok');
        await this.refresh();
      } catch (x) { fail(x); }
    },
  };

  // ================================================================ wiring & boot

  function wire() {
    const on = (id, ev, fn) => byTid(id).addEventListener(ev, fn);
    const onId = (id, ev, fn) => $(`#${id}`).addEventListener(ev, fn);
    on('signin-form', 'submit', signIn);
    on('signout', 'click', signOut);
    on('tenant-select', 'change', (e) => { S.tenant = e.target.value; Secret.hide(); route(false); });
    onId('skip', 'click', (e) => { e.preventDefault(); $('#main').focus(); }); // a #main hash would confuse the router
    window.addEventListener('hashchange', () => route(true));
    onId('tenants-body', 'click', (e) => Tenants.onClick(e));
    const leaseFilter = debounce(() => { Leases.reset(); Leases.refresh().catch(fail); });
    ['filter-workflow', 'filter-workload', 'filter-client', 'filter-actor'].forEach((id) => on(id, 'input', leaseFilter));
    on('filter-inactive', 'change', () => Leases.refresh().catch(fail));
    onId('lease-filters', 'submit', (e) => e.preventDefault());
    onId('lease-body', 'click', (e) => Leases.onClick(e));
    on('revoke-tenant', 'click', () => Rules.revokeTenant());
    const auditReload = () => { Audit.reset(); Audit.more(); };
    ['audit-filter-action', 'audit-filter-workflow', 'audit-filter-client'].forEach((id) => on(id, 'input', debounce(auditReload)));
    onId('audit-filters', 'submit', (e) => { e.preventDefault(); auditReload(); });
    onId('audit-body', 'click', (e) => Audit.onClick(e));
    onId('audit-body', 'keydown', (e) => Audit.onKey(e));
    on('audit-load-more', 'click', () => Audit.more());
    on('audit-verify-run', 'click', () => Audit.verify());
    on('key-rotate', 'click', () => Keys.rotate());
    onId('keys-body', 'click', (e) => Keys.onClick(e));
    onId('clients-body', 'click', (e) => Clients.onClick(e));
    on('client-form', 'submit', (e) => Clients.createClient(e));
    on('client-form-resource', 'change', () => Clients.onResourcePick());
    on('client-form-kind', 'change', () => Clients.onKindPick());
    on('resource-form', 'submit', (e) => Clients.createResource(e));
    on('secret-copy', 'click', () => Secret.copy());
    on('secret-dismiss', 'click', () => { Secret.hide(); $('#h-clients').focus(); });
    Confirm.wire();
    Audit.wire();
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
})();
