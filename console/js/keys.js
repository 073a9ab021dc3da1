// Signing keys: their lifetimes on a timeline, the next rotation, and
// rotating or revoking (global admins).

import { $, badge, byTid, clipped, el, num, once, reconcile, setCells, setText } from './dom.js';
import { api, load, poll, say } from './api.js';
import { confirmThen } from './confirm.js';
import { enc, fmtDur, fmtTime, ms } from './format.js';
import { S } from './state.js';

export const Keys = {
  wire() {
    byTid('key-rotate').addEventListener('click', () => this.rotate());
    $('#keys-body').addEventListener('click', (e) => this.onClick(e));
  },
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
    const kid = b.dataset.kid, active = b.closest('tr').dataset.state === 'active';
    confirmThen({
      title: 'Revoke signing key', reason: true, yes: 'Revoke key',
      text: `Revoke key ${kid}: every token it signed, in every tenant, stops being valid at once, and it leaves the JWKS. This cannot be undone.`,
      // The console's own session is a token the active key signed (the cookie is out of this page's reach, so the active key is the test).
      warning: active ? 'This is the active signing key: unless you signed in before it became active, it signed your own console session too, so this also signs you out. '
        + 'A fresh key signs at once; sign in again to carry on.' : '',
      run: async (reason) => { await api('POST', `/v1/keys/${enc(kid)}/revoke`, { reason }); say(`Key ${kid} revoked.`, 'ok'); },
    }, () => this.refresh());
  },
};
