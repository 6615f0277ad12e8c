// Pending approvals: each request with what it would do, approve (with a
// TOTP or recovery code when the request needs one) or reject (with a
// reason). Decisions go to POST /api/approvals/{id}/approve|reject.
import { api } from './api.js';
import { $, el, errText, toast, when } from './dom.js';

let timer = null;

function card(a) {
  const totp = a.second_factor_required
    ? el('input', { class: 'totp', inputmode: 'numeric', autocomplete: 'one-time-code', placeholder: 'TOTP or recovery code', 'aria-label': 'TOTP code' })
    : null;
  const reason = el('input', { class: 'reason', placeholder: 'reason (for a rejection)', 'aria-label': 'reason' });
  const msg = el('p', { class: 'error' });
  const decide = async (how) => {
    const body = {};
    if (how === 'approve' && totp && totp.value.trim()) body.totp_code = totp.value.trim();
    if (how === 'reject' && reason.value.trim()) body.reason = reason.value.trim();
    try {
      const r = await api('POST', '/api/approvals/' + a.id + '/' + how, body);
      toast(a.action + ' ' + r.status + ' (' + a.id.slice(0, 8) + ')');
      load();
    } catch (e) {
      msg.textContent = errText(e);
    }
  };
  return el('div', { class: 'card approval risk-' + a.risk_level, dataset: { id: a.id } },
    el('div', { class: 'row spread' },
      el('strong', {}, a.action),
      el('span', { class: 'pill risk' }, a.risk_level + ' risk')),
    el('p', {}, a.description || a.action_summary || ''),
    el('p', { class: 'hint' }, 'agent ' + (a.agent_name || a.agent_id) + ' · requested by ' + (a.requested_by || '?') +
      ' · ' + when(a.requested_at || a.created_at) + ' · expires ' + when(a.expires_at) + ' · id ' + a.id),
    a.payload && Object.keys(a.payload).length ? el('pre', {}, JSON.stringify(a.payload, null, 2)) : null,
    el('div', { class: 'row' },
      totp,
      el('button', { type: 'button', class: 'approve', onclick: () => decide('approve') }, 'Approve'),
      reason,
      el('button', { type: 'button', class: 'reject', onclick: () => decide('reject') }, 'Reject')),
    msg);
}

async function load() {
  try {
    const r = await api('GET', '/api/approvals?status=pending&limit=100');
    const list = r.approvals || [];
    $('approvals-note').textContent = r.total + ' pending' + (r.total > list.length ? ' (showing ' + list.length + ')' : '');
    $('approvals-list').replaceChildren(...list.map(card));
    const b = $('approvals-badge');
    b.textContent = r.total;
    b.classList.toggle('hidden', !r.total);
  } catch (e) {
    $('approvals-note').textContent = errText(e);
  }
}

export default {
  show() {
    load();
    clearInterval(timer);
    // Refreshed while shown, keeping any code being typed: a card is
    // only redrawn when the list changes.
    timer = setInterval(async () => {
      try {
        const r = await api('GET', '/api/approvals?status=pending&limit=100');
        const ids = (r.approvals || []).map((a) => a.id).join();
        const shown = [...$('approvals-list').children].map((c) => c.dataset.id).join();
        if (ids !== shown) load();
      } catch (_) { /* shown on the next load */ }
    }, 5000);
  },
  hide() { clearInterval(timer); },
};
