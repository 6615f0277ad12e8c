// The live streams: the comms event bus (GET /api/comms/events/stream)
// and the daemon's log (GET /api/logs/stream), each followed over SSE
// while its panel is shown, resuming with Last-Event-ID after a drop.
import { api, follow } from './api.js';
import { $, el, errText, status, when } from './dom.js';

const MAX_ROWS = 300;

function prepend(t, row) {
  let body = t.tBodies[0];
  if (!body) body = t.appendChild(el('tbody'));
  body.prepend(row);
  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);
}

function short(v) {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s && s.length > 240 ? s.slice(0, 240) + '…' : s || '';
}

function setState(id, s) {
  const n = $(id);
  n.replaceChildren(status(s));
  n.dataset.state = s;
}

let eventsFeed = null;
// eventsGen tells a show() still waiting for the backlog that the panel
// was left (or re-filtered) meanwhile, so it opens no stream.
let eventsGen = 0;

function eventRow(ev) {
  return el('tr', { dataset: { id: ev.id, type: ev.type } },
    el('td', {}, String(ev.id)),
    el('td', {}, when(ev.timestamp)),
    el('td', {}, el('strong', {}, ev.type)),
    el('td', {}, (ev.source || '') + ' → ' + (ev.target || '')),
    el('td', { class: 'mono' }, short(ev.detail)));
}

export const events = {
  async show() {
    events.hide();
    const gen = eventsGen;
    const t = $('events-table');
    t.replaceChildren(el('thead', {}, el('tr', {}, ['id', 'time', 'type', 'route', 'detail'].map((h) => el('th', {}, h)))), el('tbody'));
    const type = $('events-type').value.trim();
    const q = type ? '?type=' + encodeURIComponent(type) : '';
    // The recent past first, then live from the newest id shown.
    let since = null;
    try {
      const r = await api('GET', '/api/comms/events?limit=50' + (type ? '&type=' + encodeURIComponent(type) : ''));
      for (const ev of (r.items || []).slice().reverse()) prepend(t, eventRow(ev));
      since = r.latest_id !== undefined ? r.latest_id : null;
    } catch (e) {
      setState('events-state', 'error: ' + errText(e));
      return;
    }
    if (gen !== eventsGen) return;
    eventsFeed = follow('/api/comms/events/stream' + q, (m) => {
      if (m.event === 'resync') {
        prepend(t, el('tr', { class: 'gap' }, el('td', { colspan: 5 }, 'resync: ' + m.data)));
        return;
      }
      try { prepend(t, eventRow(JSON.parse(m.data))); } catch (_) { /* not an event */ }
    }, (s) => setState('events-state', s), since);
  },
  hide() {
    eventsGen++;
    if (eventsFeed) eventsFeed.stop();
    eventsFeed = null;
  },
};
$('events-filter').addEventListener('submit', (e) => { e.preventDefault(); events.show(); });

let logsFeed = null;

export const logs = {
  show() {
    logs.hide();
    const t = $('logs-table');
    t.replaceChildren(el('thead', {}, el('tr', {}, ['time', 'level', 'component', 'message', 'fields'].map((h) => el('th', {}, h)))), el('tbody'));
    const level = $('logs-level').value;
    logsFeed = follow('/api/logs/stream?tail=100&level=' + encodeURIComponent(level), (m) => {
      if (m.event === 'gap') {
        prepend(t, el('tr', { class: 'gap' }, el('td', { colspan: 5 }, 'lines missed: ' + m.data)));
        return;
      }
      let l;
      try { l = JSON.parse(m.data); } catch (_) { return; }
      const { time, level: lv, component, message, ...rest } = l;
      prepend(t, el('tr', { class: 'lvl-' + lv },
        el('td', {}, when(time)),
        el('td', {}, lv || ''),
        el('td', {}, component || ''),
        el('td', {}, message || ''),
        el('td', { class: 'mono' }, short(rest))));
    }, (s) => setState('logs-state', s));
  },
  hide() {
    if (logsFeed) logsFeed.stop();
    logsFeed = null;
  },
};
$('logs-filter').addEventListener('submit', (e) => { e.preventDefault(); logs.show(); });
