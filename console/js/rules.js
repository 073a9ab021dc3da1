// Revocation rules of the selected tenant, newest first, and revoking the
// whole tenant.

import { $, badge, byTid, clipped, num, reconcile, setCells } from './dom.js';
import { load, poll, tenantPath } from './api.js';
import { revoke } from './confirm.js';
import { fmtTime, ms, plural, selectorText, whoOf } from './format.js';
import { S } from './state.js';

export const Rules = {
  wire() { byTid('revoke-tenant').addEventListener('click', () => this.revokeTenant()); },
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
    revoke({}, `End every token in tenant ${S.tenant} minted before now${n}, whatever its workflow, workload or client. Tokens minted afterwards are not affected.`, () => this.refresh());
  },
};
