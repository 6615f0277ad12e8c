// Chat: pick or create an agent and talk to it. Replies stream from
// POST /api/agents/{id}/message/stream (SSE over fetch): chunk events
// append text as it comes, done carries the session and usage, an error
// event says why the turn failed. The conversation of each agent (its
// session) lasts as long as the tab.
import { api, stream } from './api.js';
import { $, el, errText } from './dom.js';

const sessions = {}; // agent id -> {session_id, log: [nodes]}
let agents = [];
let busy = false;

function selected() { return $('chat-agent').value; }

function logFor(id) {
  if (!sessions[id]) sessions[id] = { session: '', nodes: [] };
  return sessions[id];
}

function render() {
  const id = selected();
  const log = $('chat-log');
  if (!id) {
    log.replaceChildren(el('p', { class: 'hint' }, 'Create an agent to start.'));
    return;
  }
  const s = logFor(id);
  log.replaceChildren(...s.nodes);
  if (!s.nodes.length) log.append(el('p', { class: 'hint' }, 'Say something to ' + (agents.find((a) => a.id === id) || {}).name + '.'));
  log.scrollTop = log.scrollHeight;
}

async function loadAgents(pick) {
  const [list, models] = await Promise.all([
    api('GET', '/api/agents?limit=100'),
    api('GET', '/api/models').catch(() => ({ models: [] })),
  ]);
  agents = list.items || [];
  const sel = $('chat-agent');
  const keep = pick || sel.value;
  sel.replaceChildren(...agents.map((a) => el('option', { value: a.id }, a.name + ' — ' + a.model)));
  if (keep && agents.some((a) => a.id === keep)) sel.value = keep;
  $('chat-models').replaceChildren(...(models.models || []).map((m) => el('option', { value: m.provider + '/' + m.id })));
  render();
}

function bubble(who, text) {
  return el('div', { class: 'msg ' + who }, el('div', { class: 'who' }, who === 'user' ? 'you' : who), el('div', { class: 'text' }, text));
}

async function send(text) {
  const id = selected();
  if (!id || busy) return;
  busy = true;
  $('chat-send').disabled = true;
  const s = logFor(id);
  const out = bubble('agent', '');
  out.dataset.state = 'streaming';
  out.dataset.chunks = '0';
  const body = out.querySelector('.text');
  s.nodes.push(bubble('user', text), out);
  render();
  $('chat-status').textContent = 'thinking…';
  const req = { message: text };
  if (s.session) req.session_id = s.session;
  try {
    await stream('POST', '/api/agents/' + encodeURIComponent(id) + '/message/stream', req, (ev) => {
      const d = JSON.parse(ev.data);
      switch (ev.event) {
        case 'chunk':
          body.textContent += d.content;
          out.dataset.chunks = String(Number(out.dataset.chunks) + 1);
          $('chat-log').scrollTop = $('chat-log').scrollHeight;
          break;
        case 'phase':
          $('chat-status').textContent = d.phase + (d.detail ? ': ' + d.detail : '') + '…';
          break;
        case 'tool_use':
          out.append(el('div', { class: 'tool' }, 'tool: ' + d.tool));
          break;
        case 'done':
          s.session = d.session_id || s.session;
          out.dataset.state = 'done';
          $('chat-status').textContent = 'done · ' + d.usage.input_tokens + ' in / ' + d.usage.output_tokens + ' out tokens' +
            (d.cost_usd !== undefined ? ' · $' + Number(d.cost_usd).toFixed(4) : '');
          break;
        case 'error':
          out.dataset.state = 'error';
          out.append(el('div', { class: 'error' }, d.error + ' (' + d.code + ')'));
          $('chat-status').textContent = 'failed';
          break;
      }
    });
    if (out.dataset.state === 'streaming') {
      out.dataset.state = 'error';
      $('chat-status').textContent = 'the stream ended before the turn did';
    }
  } catch (e) {
    out.dataset.state = 'error';
    out.append(el('div', { class: 'error' }, errText(e)));
    $('chat-status').textContent = 'failed';
  } finally {
    busy = false;
    $('chat-send').disabled = false;
  }
}

$('chat-agent').addEventListener('change', render);

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('chat-input').value.trim();
  if (!text) return;
  $('chat-input').value = '';
  send(text);
});

$('chat-create').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('chat-create-error').textContent = '';
  try {
    const a = await api('POST', '/api/agents', { name: $('chat-create-name').value.trim(), model: $('chat-create-model').value.trim() });
    $('chat-create-name').value = '';
    await loadAgents(a.id);
  } catch (err) {
    $('chat-create-error').textContent = errText(err);
  }
});

export default {
  show() {
    loadAgents().catch((e) => $('chat-log').replaceChildren(el('p', { class: 'error' }, errText(e))));
  },
};
