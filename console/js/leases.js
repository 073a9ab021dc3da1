// Live leases of the selected tenant: polled every 2 s and updated row by
// row, a TTL that counts down every second, live counts by workflow and
// resource, and revocation by lease, workflow, workload or client.

import { $, badge, byTid, clipped, el, num, once, reconcile, setCells, setText, wrapped } from './dom.js';
import { debounce, fail, loadPages, poll, say, tenantPath } from './api.js';
import { revoke } from './confirm.js';
import { actorChain, fmtDur, fmtTime, ms, plural } from './format.js';
import { S } from './state.js';
import { Stats } from './stats.js';
import { Custody } from './custody.js';

export const Leases = {
  rows: new Map(), // lease id -> { tr, lease, state, seenActive }
  epoch: 0, // bumps on reset: answers to requests sent before it are dropped
  seq: 0, // request order, so an older answer never overwrites a newer one
  applied: 0,
  CAP: 300, // ended rows kept for context
  wire() {
    const filter = debounce(() => { this.reset(); this.refresh().catch(fail); });
    ['filter-workflow', 'filter-workload', 'filter-client', 'filter-actor'].forEach((id) => byTid(id).addEventListener('input', filter));
    byTid('filter-inactive').addEventListener('change', () => this.refresh().catch(fail));
    // What an MCP server logs is the jti: open that lease's custody, listed here or not.
    $('#lease-filters').addEventListener('submit', (e) => {
      e.preventDefault();
      const id = byTid('filter-lease').value.trim().toLowerCase();
      if (!id) return;
      if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) { say('A lease id is a UUID (the token\'s jti).', 'error'); return; }
      Custody.show({ id });
    });
    $('#lease-body').addEventListener('click', (e) => this.onClick(e));
    Custody.wire();
  },
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
    const twoLines = (c) => c.append(el('span', { className: 'main' }), el('span', { className: 'sub', hidden: true }));
    setCells(tr, ['', twoLines, twoLines, '', '', twoLines, '',
      once(() => [el('button', { type: 'button', className: 'btn btn-xs', testid: 'show-custody', dataset: { action: 'custody' },
        title: `Tool calls of lease ${l.id}` }, 'calls'),
      el('div', { className: 'btn-group', attrs: { role: 'group', 'aria-label': 'Revoke' } },
        btn('lease', l.id), btn('workflow', l.workflow), btn('workload', l.workload), btn('client', l.client_id))])]);
    Object.assign(tr.cells[5], { className: 'num ttl' });
    tr.cells[5].dataset.testid = 'ttl';
    tr.cells[5].lastChild.dataset.testid = 'issued';
    tr.cells[2].lastChild.dataset.testid = 'source';
    tr.cells[6].dataset.testid = 'state';
    return tr;
  },
  fill({ lease: l, tr }) {
    // A DPoP-bound token (RFC 9449) is useless without its holder's key: say which are.
    Object.assign(tr.dataset, { workflow: l.workflow, workload: l.workload, clientId: l.client_id, resource: l.resource,
      binding: l.jkt ? 'dpop' : 'bearer' });
    const agents = actorChain(l.actor);
    const via = [agents.length ? `for ${l.workload} via ${agents.join(' → ')}` : '', l.jkt ? 'DPoP-bound' : '']
      .filter(Boolean).join(' · ');
    const [wf, wl, cl, res, sc, ttl] = tr.cells;
    clipped(l.workflow)(wf);
    setText(wl.firstChild, l.workload);
    wl.lastChild.hidden = !via;
    if (via) setText(wl.lastChild, via);
    wl.title = via ? `${l.workload}, ${via}` : l.workload;
    // Who and from where: the address the token request came from (behind trusted proxies, the forwarded one).
    setText(cl.firstChild, l.client_id);
    setText(cl.lastChild, l.source ? `from ${l.source}` : 'source not recorded');
    cl.lastChild.hidden = false;
    cl.title = l.source ? `${l.client_id}, from ${l.source}` : l.client_id;
    wrapped(l.resource)(res); // in an incident the whole URI matters: it wraps rather than clips
    clipped((l.scopes || []).join(' '))(sc);
    setText(ttl.lastChild, `issued ${shortTime(l.issued_at)}`);
    ttl.lastChild.hidden = false;
    ttl.lastChild.title = `issued ${fmtTime(l.issued_at)}`;
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
    setText(r.tr.cells[5].firstChild, text);
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
        setCells(tr, [field === 'resource' ? wrapped(name) : clipped(name), num(n)]);
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
    if (kind === 'custody') { Custody.show(l); return; }
    if (kind === 'lease') {
      revoke({ lease_id: l.id }, `End the token ${l.id} (workflow ${l.workflow}, workload ${l.workload}, client ${l.client_id}) in tenant ${t}. No other token is affected.`, () => this.refresh(), l.client_id);
      return;
    }
    const field = kind === 'client' ? 'client_id' : kind;
    let n = 0;
    for (const x of this.rows.values()) if (x.state === 'active' && x.lease[field] === l[field]) n += 1;
    revoke({ [field]: l[field] }, `End every token of ${kind} ${l[field]} in tenant ${t} minted before now `
      + `(${plural(n, 'live token')} listed here). Tokens minted afterwards are not affected.`, () => this.refresh(),
    // A workflow spans clients; a workload or a client names the one that minted it.
    kind === 'workflow' ? null : l.client_id);
  },
};

/** Issue time in a narrow cell: the time of day for today's leases, else month, day and minute (the full time is in the tooltip). */
function shortTime(iso) {
  const full = fmtTime(iso);
  return full.slice(0, 10) === fmtTime(Date.now()).slice(0, 10) ? full.slice(11) : full.slice(5, 16);
}
