// The audit log of the selected tenant: filtered, loaded page by page as it
// scrolls, each event's JSON a click away, and the hash chain verified.

import { $, badge, byTid, clipped, el, setCells, setText } from './dom.js';
import { debounce, fail, load, tenantPath } from './api.js';
import { actorChain, fmtTime, plural, qs, whoOf } from './format.js';
import { S } from './state.js';

export const Audit = {
  cursor: null, done: false, loading: false, epoch: 0, observer: null,
  events: new Map(),
  wire() {
    const reload = () => { this.reset(); this.more(); };
    ['audit-filter-action', 'audit-filter-workflow', 'audit-filter-client'].forEach((id) => byTid(id).addEventListener('input', debounce(reload)));
    $('#audit-filters').addEventListener('submit', (e) => { e.preventDefault(); reload(); });
    $('#audit-body').addEventListener('click', (e) => this.onClick(e));
    $('#audit-body').addEventListener('keydown', (e) => this.onKey(e));
    byTid('audit-load-more').addEventListener('click', () => this.more());
    byTid('audit-verify-run').addEventListener('click', () => this.verify());
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
