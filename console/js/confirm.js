// One modal for every consequential action: says exactly what ends (and
// warns of what the admin may not expect), asks for a reason, offers one
// optional follow-up step, runs it, reports errors in place. Revocation by
// selector goes through it too.

import { $, byTid, setText } from './dom.js';
import { api, fail, say } from './api.js';
import { enc, selectorText } from './format.js';
import { S } from './state.js';

export const Confirm = {
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
  /**
   * Resolves true once run() succeeded, false if the admin backed out.
   * `warning`: shown apart from the text; `option`: a checkbox label, its
   * state passed to run(reason, checked). Both start empty and unchecked.
   */
  open({ title, text, warning = '', option = '', reason = false, yes = 'Confirm', run }) {
    if (this.pending) this.finish(false);
    setText(byTid('confirm-title'), title);
    setText(byTid('confirm-text'), text);
    setText(byTid('confirm-yes'), yes);
    const warn = byTid('confirm-warning');
    warn.hidden = !warning;
    warn.textContent = warning;
    $('#confirm-option-field').hidden = !option;
    byTid('confirm-option').checked = false;
    byTid('confirm-option-label').textContent = option;
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
    try { await p.run(reason, byTid('confirm-option').checked); this.finish(true); } catch (e) { byTid('confirm-error').textContent = e.message; } finally { this.setBusy(false); }
  },
  setBusy(on) {
    this.busy = on;
    byTid('confirm-yes').disabled = on;
    byTid('confirm-no').disabled = on;
    byTid('confirm-option').disabled = on;
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
export const confirmThen = (opts, after) => Confirm.open(opts).then((ok) => ok && after()).catch(fail);

/**
 * Revoke by selector ({} = the whole tenant), behind the confirm dialog; then
 * `refresh` the page that asked, at once rather than at its next poll. With
 * `client`, the dialog also offers to disable that client, so it cannot
 * simply mint again.
 */
export function revoke(selector, text, refresh, client = null) {
  const tenant = S.tenant;
  confirmThen({
    title: 'Revoke tokens', text, reason: true, yes: 'Revoke',
    option: client ? `Also disable client ${client}, so it cannot mint new tokens (every token it holds ends too)` : '',
    run: async (reason, disable) => {
      // Disabling first: it is idempotent, so a retry after a failed revocation repeats nothing.
      if (client && disable) await api('PATCH', `/v1/tenants/${enc(tenant)}/clients/${enc(client)}`, { disabled: true });
      const rule = await api('POST', `/v1/tenants/${enc(tenant)}/revocations`, { ...selector, reason });
      say(`Revoked ${selectorText(rule.selector)} in tenant ${tenant}${client && disable ? `, and disabled client ${client}` : ''}: `
        + 'in force now on every replica; lease rows are marked in the background.', 'ok');
    },
  }, refresh);
}
