// The dashboard's shell: sign-in, the panel switcher (#hash), the
// approvals badge. Each panel module has show() and, when it holds a
// stream open, hide().
import { api, credential, onUnauthorized } from './api.js';
import { $, el, errText } from './dom.js';
import chat from './chat.js';
import approvals from './approvals.js';
import { overview, channels, mcp, topology, audit } from './views.js';
import { events, logs } from './live.js';

const panels = { overview, chat, approvals, channels, mcp, topology, events, logs, audit };
let current = null;
let badgeTimer = null;

function showPanel(name) {
  if (!panels[name]) name = 'overview';
  if (current && current !== name && panels[current].hide) panels[current].hide();
  for (const s of document.querySelectorAll('main > section.panel')) s.classList.toggle('hidden', s.id !== name);
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.getAttribute('href') === '#' + name);
  current = name;
  document.body.dataset.panel = name;
  panels[name].show();
}

// probe says whether the browser is let in: by the key it holds, by an
// OIDC session cookie, or as a loopback caller of a daemon without a key.
// Any answer but 401 means yes (a viewer may get 403 on some panels).
async function probe() {
  try {
    await api('GET', '/api/approvals/count');
    return true;
  } catch (e) {
    return e.status !== 401;
  }
}

async function describeIdentity() {
  if (credential.key()) return 'API key';
  try {
    const u = await api('GET', '/api/auth/userinfo');
    if (u && u.auth_method === 'external_oauth') return (u.email || u.name || u.sub) + ' (' + (u.roles || []).join(', ') + ')';
  } catch (_) { /* no session */ }
  return 'loopback, no API key configured';
}

async function enter() {
  document.body.dataset.auth = 'in';
  $('signin').classList.add('hidden');
  $('nav').classList.remove('hidden');
  $('signout').classList.remove('hidden');
  $('who').textContent = await describeIdentity();
  refreshBadge();
  clearInterval(badgeTimer);
  badgeTimer = setInterval(refreshBadge, 10000);
  showPanel(location.hash.slice(1));
}

function leave(reason) {
  document.body.dataset.auth = 'out';
  clearInterval(badgeTimer);
  if (current && panels[current].hide) panels[current].hide();
  current = null;
  for (const s of document.querySelectorAll('main > section.panel')) s.classList.add('hidden');
  $('nav').classList.add('hidden');
  $('signout').classList.add('hidden');
  $('who').textContent = '';
  $('signin').classList.remove('hidden');
  $('signin-error').textContent = reason || '';
  loadProviders();
}

async function refreshBadge() {
  const b = $('approvals-badge');
  try {
    const c = await api('GET', '/api/approvals/count');
    b.textContent = c.pending;
    b.classList.toggle('hidden', !c.pending);
  } catch (_) {
    b.classList.add('hidden');
  }
}

async function loadProviders() {
  try {
    const p = await api('GET', '/api/auth/providers');
    const box = $('signin-providers');
    box.replaceChildren(...(p.providers || []).map((pr) => el('a', {
      class: 'button', href: '/api/auth/login/' + encodeURIComponent(pr.id) + '?return_to=/',
    }, 'Sign in with ' + (pr.display_name || pr.id))));
    $('signin-oidc').classList.toggle('hidden', !p.enabled || !(p.providers || []).length);
  } catch (_) {
    $('signin-oidc').classList.add('hidden');
  }
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = $('signin-key').value.trim();
  credential.set(key);
  try {
    await api('GET', '/api/approvals/count');
  } catch (err) {
    if (err.status === 401) {
      credential.clear();
      $('signin-error').textContent = 'That key was refused: ' + errText(err);
      return;
    }
  }
  $('signin-key').value = '';
  enter();
});

$('signout').addEventListener('click', async () => {
  if (!credential.key()) {
    try { await api('POST', '/api/auth/logout'); } catch (_) { /* not a session */ }
  }
  credential.clear();
  leave('Signed out.');
});

onUnauthorized(() => {
  if (document.body.dataset.auth === 'in') {
    credential.clear();
    leave('The daemon no longer accepts this credential; sign in again.');
  }
});

window.addEventListener('hashchange', () => {
  if (document.body.dataset.auth === 'in') showPanel(location.hash.slice(1));
});

for (const b of document.querySelectorAll('[data-refresh]')) {
  b.addEventListener('click', () => panels[b.dataset.refresh].show());
}

(async () => {
  if (await probe()) enter();
  else {
    credential.clear();
    leave('');
  }
})();
