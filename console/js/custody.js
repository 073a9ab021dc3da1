// One lease's chain of custody: the person it acts for, the agents in its
// `act` chain, the lease itself, and every MCP request gateways reported
// for it (tool, outcome, latency; never arguments, which are not recorded).

import { $, byTid, el, setCells, setText } from './dom.js';
import { fail, load, tenantPath } from './api.js';
import { actorChain, enc, fmtTime, qs } from './format.js';

export const Custody = {
  wire() {
    byTid('custody-close').addEventListener('click', () => this.hide());
  },
  hide() { $('#custody').hidden = true; },
  /** Opens the panel for `lease` and fills it from lease detail and the audit list. */
  async show(lease) {
    const panel = $('#custody');
    panel.hidden = false;
    panel.dataset.leaseId = lease.id;
    setText(byTid('custody-title'), `Lease ${lease.id}`);
    try {
      const [detail, trail] = await Promise.all([
        load(tenantPath(`leases/${enc(lease.id)}`)),
        load(tenantPath('audit') + qs({ lease_id: lease.id, limit: 200 })),
      ]);
      if (!detail || !trail || panel.dataset.leaseId !== lease.id) return;
      this.fill(detail, trail.items || []);
    } catch (e) { fail(e); }
  },
  fill(l, events) {
    const agents = actorChain(l.actor);
    setText(byTid('custody-person'), agents.length ? l.workload : `${l.workload} (no delegation)`);
    setText(byTid('custody-agents'), agents.length ? agents.join(' → ') : '—');
    setText(byTid('custody-lease'), `${l.workflow} · ${l.client_id} · ${l.resource} · ${(l.scopes || []).join(' ')}`
      + ` · issued ${fmtTime(l.issued_at)} · ${l.active ? 'active' : 'inactive'}`
      + (l.jkt ? ` · DPoP-bound to key ${l.jkt}` : ' · bearer token'));
    setText(byTid('custody-count'), String(l.mcp_requests ?? 0));
    const calls = events.filter((e) => e.action === 'mcp.request');
    const body = byTid('custody-calls');
    body.replaceChildren(...calls.map((e) => {
      const m = e.mcp || {}, tr = el('tr', { testid: 'custody-call' });
      setCells(tr, [fmtTime(e.at), m.method, m.name, e.outcome + (e.reason ? ` (${e.reason})` : ''),
        m.latency_ms === undefined || m.latency_ms === null ? '—' : `${Number(m.latency_ms).toFixed(1)} ms`, m.gateway]);
      return tr;
    }));
    $('#custody-empty').hidden = calls.length > 0;
  },
};
