// The tenants a session may see: the tenant picker in the top bar, and the
// tenants page (global admins) with live-lease counts.

import { $, byTid, el, num, once, reconcile, setCells, setText } from './dom.js';
import { api, fail, load, poll } from './api.js';
import { S } from './state.js';

/** The tenant list of a fresh session (a tenant admin: its own tenant, even if the list failed). */
export async function loadTenants() {
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

export const Tenants = {
  wire() { $('#tenants-body').addEventListener('click', (e) => this.onClick(e)); },
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
