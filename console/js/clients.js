// Who may get tokens for what in the selected tenant: clients and resources
// (lists, creation, disabling a client, editing its grants, rotating its
// secret; the one place a new secret is shown, once) and trust policies
// (listed and deleted; creating one stays with the API).

import { $, badge, byTid, clipped, el, once, reconcile, setCells, setText, wrapped } from './dom.js';
import { api, fail, load, poll, say, tenantPath } from './api.js';
import { confirmThen } from './confirm.js';
import { enc, fmtTime, fmtTtl, splitList } from './format.js';
import { S } from './state.js';

export const Secret = {
  wire() {
    byTid('secret-copy').addEventListener('click', () => this.copy());
    byTid('secret-dismiss').addEventListener('click', () => { this.hide(); $('#h-clients').focus(); });
  },
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

export const Clients = {
  resources: [],
  clients: [],
  wire() {
    $('#clients-body').addEventListener('click', (e) => this.onClick(e));
    byTid('client-form').addEventListener('submit', (e) => this.createClient(e));
    byTid('client-form-resource').addEventListener('change', () => this.onResourcePick());
    byTid('client-form-kind').addEventListener('change', () => this.onKindPick());
    byTid('resource-form').addEventListener('submit', (e) => this.createResource(e));
    $('#resources-body').addEventListener('click', (e) => this.onResourceClick(e));
    byTid('tools-form').addEventListener('submit', (e) => this.saveTools(e));
    byTid('tools-form-cancel').addEventListener('click', () => { byTid('tools-form').hidden = true; });
    Grants.wire();
  },
  // A grants editor left open belongs to the tenant it was opened in: a new view starts without it.
  enter() { Grants.hide(); this.refresh().catch(fail); },
  async refresh() {
    if (!S.tenant) return;
    const [c, r] = await Promise.all([load(tenantPath('clients?limit=1000')), load(tenantPath('resources?limit=1000'))]);
    if (!c || !r) return;
    this.resources = r.items || [];
    this.clients = c.items || [];
    reconcile($('#clients-body'), this.clients, (x) => x.client_id, (tr, x) => {
      Object.assign(tr.dataset, { testid: 'client-row', clientId: x.client_id, disabled: String(Boolean(x.disabled)) });
      const grants = (x.grants || []).map((g) => `${g.resource}: ${(g.scopes || []).join(' ')}`).join('; ');
      setCells(tr, [clipped(x.client_id), clipped(x.name), x.kind, clipped((x.workflows || []).join(', ')), wrapped(grants),
        badge(x.disabled ? 'disabled' : 'enabled'), once(() => [el('div', { className: 'btn-group' },
          el('button', { type: 'button', className: 'btn btn-xs btn-danger', testid: 'client-disable', dataset: { action: 'disable' }, text: 'Disable…', attrs: { 'aria-label': `Disable client ${x.client_id}` } }),
          el('button', { type: 'button', className: 'btn btn-xs', testid: 'client-grants', dataset: { action: 'grants' }, text: 'Grants…', attrs: { 'aria-label': `Edit the grants of client ${x.client_id}` } }),
          el('button', { type: 'button', className: 'btn btn-xs', testid: 'client-rotate', dataset: { action: 'rotate' }, text: 'New secret…', attrs: { 'aria-label': `New secret for client ${x.client_id}` } }))])]);
      byTid('client-disable', tr).disabled = Boolean(x.disabled);
    });
    reconcile($('#resources-body'), this.resources, (x) => x.id || x.uri, (tr, x) => {
      Object.assign(tr.dataset, { testid: 'resource-row', uri: x.uri, id: x.id });
      setCells(tr, [wrapped(x.uri), clipped(x.name), clipped((x.scopes || []).join(' ')),
        `${fmtTtl(x.default_ttl_seconds || 0)} / ${fmtTtl(x.max_ttl_seconds || 0)}`, clipped(toolSummary(x.tools)),
        once(() => [el('button', { type: 'button', className: 'btn btn-xs', testid: 'resource-tools', dataset: { action: 'tools' }, text: 'Tools…', attrs: { 'aria-label': `Edit the tool policy of ${x.uri}` } })])]);
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
    if (b.dataset.action === 'grants') { Grants.edit(this.clients.find((x) => x.client_id === id), this.resources); return; }
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
  onResourceClick(e) {
    const b = e.target.closest('button[data-action="tools"]');
    if (!b) return;
    const res = this.resources.find((x) => x.id === b.closest('tr').dataset.id);
    if (!res) return;
    this.editing = res;
    setText($('#tools-form-uri'), res.uri);
    byTid('tools-form-json').value = res.tools ? JSON.stringify(res.tools, null, 2) : '';
    byTid('tools-form').hidden = false;
    byTid('tools-form-json').focus();
  },
  async saveTools(e) {
    e.preventDefault();
    const res = this.editing, text = byTid('tools-form-json').value.trim();
    if (!res) return;
    let tools = null;
    if (text) {
      try { tools = JSON.parse(text); } catch (x) { say(`The tool policy is not JSON: ${x.message}`, 'error'); return; }
    }
    try {
      await api('PATCH', tenantPath(`resources/${enc(res.id)}`), { tools });
      byTid('tools-form').hidden = true;
      say(`Tool policy of ${res.uri} saved; gateways apply it within seconds.`, 'ok');
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

/**
 * Editing one client's grants: a line per grant (resource, scopes), saved
 * whole with PATCH. mayfly checks them (a scope the resource does not define
 * is a 422) and its message is shown here; nothing changes then.
 */
const Grants = {
  client: null,
  seq: 0, // ids for each line's label/control pairs
  wire() {
    const form = byTid('grants-form');
    form.addEventListener('submit', (e) => { e.preventDefault(); this.save(); });
    byTid('grants-add', form).addEventListener('click', () => { const line = this.line({ resource: '', scopes: [] }); $('select', line).focus(); });
    byTid('grants-form-cancel', form).addEventListener('click', () => this.close());
    $('#grants-list').addEventListener('click', (e) => {
      const b = e.target.closest('button[data-action="remove"]');
      if (!b) return;
      b.closest('li').remove();
      byTid('grants-add').focus();
    });
  },
  edit(client, resources) {
    if (!client) return;
    this.client = client;
    this.uris = resources.map((x) => x.uri);
    setText($('#grants-form-client'), client.client_id);
    byTid('grants-form-error').textContent = '';
    $('#grants-list').replaceChildren();
    (client.grants || []).forEach((g) => this.line(g));
    byTid('grants-form').hidden = false;
    const first = $('#grants-list select');
    (first || byTid('grants-add')).focus();
  },
  hide() {
    byTid('grants-form').hidden = true;
    this.client = null;
  },
  close() { this.hide(); $('#h-clients').focus(); },
  /** One grant line; a resource outside the list (the admin API's, say) is kept as an option. */
  line(g) {
    const n = ++this.seq, uris = this.uris.includes(g.resource) || !g.resource ? this.uris : [g.resource, ...this.uris];
    const select = el('select', { id: `grant-resource-${n}`, testid: 'grant-resource' },
      el('option', { value: '', text: '(choose a resource)' }), ...uris.map((u) => el('option', { value: u, text: u })));
    select.value = g.resource || '';
    const li = el('li', { className: 'grant-line', testid: 'grant-line' },
      el('div', { className: 'field' }, el('label', { htmlFor: select.id, text: 'Resource' }), select),
      el('div', { className: 'field' }, el('label', { htmlFor: `grant-scopes-${n}`, text: 'Scopes (comma-separated)' }),
        el('input', { id: `grant-scopes-${n}`, testid: 'grant-scopes', spellcheck: false, value: (g.scopes || []).join(', ') })),
      // Its name is "Remove", described by the resource it would drop.
      el('button', { type: 'button', className: 'btn btn-sm', testid: 'grant-remove', dataset: { action: 'remove' }, text: 'Remove',
        attrs: { 'aria-describedby': select.id } }));
    $('#grants-list').append(li);
    return li;
  },
  async save() {
    const c = this.client, err = byTid('grants-form-error');
    if (!c) return;
    err.textContent = '';
    const grants = [];
    for (const li of $('#grants-list').children) {
      const resource = byTid('grant-resource', li).value, scopes = splitList(byTid('grant-scopes', li).value);
      if (!resource || !scopes.length) {
        err.textContent = 'Each grant needs a resource and at least one scope (or remove the line).';
        (resource ? byTid('grant-scopes', li) : byTid('grant-resource', li)).focus();
        return;
      }
      grants.push({ resource, scopes });
    }
    const submit = byTid('grants-form-submit');
    submit.disabled = true;
    try {
      await api('PATCH', tenantPath(`clients/${enc(c.client_id)}`), { grants });
      say(`Grants of client ${c.client_id} saved: new tokens follow them at once.`, 'ok');
      this.close();
      await Clients.refresh();
    } catch (x) {
      err.textContent = `Not saved: ${x.message}`;
      fail(x);
    } finally { submit.disabled = false; }
  },
};

/** One line for a tool map: `create_issue: repo:write (30/min) · *: repo:read`, or that any tool passes. */
function toolSummary(tools) {
  if (!tools) return 'any tool';
  const entries = Object.entries(tools);
  if (!entries.length) return 'no tool (all refused)';
  return entries.map(([name, r]) => `${name}: ${(r.scopes || []).join(' ') || 'any token'}${r.calls_per_minute ? ` (${r.calls_per_minute}/min)` : ''}`).join(' · ');
}

// Trust policies: which external issuers' tokens are exchanged for mayfly
// tokens. Deleting one refuses new exchanges; tokens minted under it run out.
export const Trust = {
  wire() { $('#trust-body').addEventListener('click', (e) => this.onClick(e)); },
  enter() { poll(10000, () => this.refresh()); },
  async refresh() {
    if (!S.tenant) return;
    const d = await load(tenantPath('trust-policies?limit=1000'));
    if (!d) return;
    const items = d.items || [];
    reconcile($('#trust-body'), items, (p) => p.id, (tr, p) => {
      Object.assign(tr.dataset, { testid: 'trust-row', policyId: p.id, name: p.name });
      const subject = p.subject ? p.subject : `matches ${p.subject_pattern}`;
      const grants = (p.grants || []).map((g) => `${g.resource}: ${(g.scopes || []).join(' ')}`).join('; ');
      const expired = p.expires_at && Date.parse(p.expires_at) <= Date.now();
      setCells(tr, [clipped(p.name), wrapped(p.issuer), wrapped(subject), wrapped(`${p.workflow_template} / ${p.workload_template}`),
        wrapped(grants), clipped(p.owner), p.expires_at ? `${fmtTime(p.expires_at).slice(0, 16)}${expired ? ' (expired)' : ''}` : 'never',
        once(() => [el('button', { type: 'button', className: 'btn btn-xs btn-danger', testid: 'trust-delete', dataset: { action: 'delete' },
          text: 'Delete…', attrs: { 'aria-label': `Delete trust policy ${p.name}` } })])]);
    });
    $('#trust-empty').hidden = items.length > 0;
  },
  onClick(e) {
    const b = e.target.closest('button[data-action="delete"]');
    if (!b) return;
    const { policyId: id, name } = b.closest('tr').dataset, t = S.tenant;
    confirmThen({
      title: 'Delete trust policy', yes: 'Delete',
      text: `Delete trust policy ${name} in tenant ${t}. Tokens of its issuer are no longer exchanged under it; tokens already minted under it run out (revoke them on the leases page to end them now).`,
      run: async () => { await api('DELETE', tenantPath(`trust-policies/${enc(id)}`)); say(`Trust policy ${name} deleted.`, 'ok'); },
    }, () => this.refresh());
  },
};
