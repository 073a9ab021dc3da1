// People's sessions in the selected tenant: who signed in (through the
// company IdP), with which MCP client, for which resource, and since when;
// ending one session, or everything a person holds, in one click.

import { $, badge, byTid, clipped, el, num, once, reconcile, setCells, wrapped } from './dom.js';
import { api, load, poll, say, tenantPath } from './api.js';
import { confirmThen, revoke } from './confirm.js';
import { enc, fmtTime } from './format.js';
import { S } from './state.js';

const stateOf = (s) => (s.revoked_at ? 'revoked' : Date.parse(s.expires_at) <= Date.now() ? 'expired' : 'active');

export const People = {
  wire() { $('#people-body').addEventListener('click', (e) => this.onClick(e)); },
  enter() { poll(3000, () => this.refresh()); },
  async refresh() {
    if (!S.tenant) return;
    const d = await load(tenantPath('sessions?limit=200'));
    if (!d) return;
    const items = d.items || [];
    reconcile($('#people-body'), items, (s) => s.id, (tr, s) => {
      tr.title = `Signed in ${fmtTime(s.created_at)}; session until ${fmtTime(s.expires_at)}`
        + (s.revoked_reason ? `; ended: ${s.revoked_reason}` : '');
      const state = stateOf(s);
      Object.assign(tr.dataset, { testid: 'session-row', sessionId: s.id, workload: s.workload, state });
      const client = s.client_name ? `${s.client_name} (${s.client_id})` : s.client_id;
      const who = s.identity && s.identity.name ? `${s.identity.name} (${s.workload})` : s.workload;
      setCells(tr, [wrapped(who), wrapped(client), wrapped(`${s.resource}: ${(s.scopes || []).join(' ')}`),
        s.dpop_bound ? 'DPoP' : 'bearer', fmtTime(s.last_used_at), num(s.refreshes),
        badge(state),
        once(() => [
          el('button', { type: 'button', className: 'btn btn-xs btn-danger', testid: 'session-end', dataset: { action: 'end' },
            text: 'End session…', attrs: { 'aria-label': `End the session of ${s.workload} with ${client}` } }),
          el('button', { type: 'button', className: 'btn btn-xs', testid: 'person-revoke', dataset: { action: 'person' },
            text: 'Revoke person…', attrs: { 'aria-label': `Revoke everything ${s.workload} holds` } }),
        ])]);
      tr.querySelectorAll('button[data-action="end"]').forEach((b) => { b.disabled = state !== 'active'; });
    });
    $('#people-empty').hidden = items.length > 0;
  },
  onClick(e) {
    const b = e.target.closest('button[data-action]');
    if (!b) return;
    const { sessionId: id, workload } = b.closest('tr').dataset, t = S.tenant;
    if (b.dataset.action === 'person') {
      revoke({ workload }, `End every token ${workload} holds in tenant ${t}, every session they have with any MCP client, and every token an agent holds on their behalf. They can sign in again; revoke their account at the IdP to stop that.`, () => this.refresh());
      return;
    }
    confirmThen({
      title: 'End session', yes: 'End session',
      text: `End this session of ${workload}: its refresh token stops working and its live access tokens are revoked on every replica and gateway. The person's other sessions go on.`,
      run: async () => { await api('DELETE', tenantPath(`sessions/${enc(id)}`)); say(`Session of ${workload} ended.`, 'ok'); },
    }, () => this.refresh());
  },
};
