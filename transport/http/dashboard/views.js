// The read-mostly panels: daemon status, channels, MCP servers, the comms
// topology and the audit chain. Each show() reloads from the API.
import { api } from './api.js';
import { $, el, errText, grid, status, table, toast, when } from './dom.js';

function failed(node, e) {
  node.replaceChildren(el('p', { class: 'error' }, errText(e)));
}

function bytes(n) {
  if (n === undefined || n === null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + ' ' + u[i];
}

function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return (d ? d + 'd ' : '') + (d || h ? h + 'h ' : '') + m + 'm ' + (s % 60) + 's';
}

export const overview = {
  async show() {
    try {
      const h = await api('GET', '/api/health/detail');
      const actors = Object.values(h.actors || {}).reduce((a, b) => a + b, 0);
      grid($('overview-health'), [
        ['status', status(h.status)],
        ['version', h.version],
        ['uptime', duration(h.uptime_seconds)],
        ['started', when(h.started_at)],
        ['actors', String(actors)],
        ['goroutines', String(h.goroutines)],
        ['store', bytes(h.store_size_bytes)],
        ['audit chain', h.audit_chain_length + ' entries'],
        ['audit', status(h.audit_status)],
        ['quarantined records', String(h.quarantined)],
      ]);
    } catch (e) { failed($('overview-health'), e); }
    try {
      const s = await api('GET', '/api/security');
      const rows = Object.entries(s.security_systems || {}).sort();
      table($('overview-security'), [
        { title: 'system', value: (r) => r[0] },
        { title: 'state', value: (r) => status(r[1]) },
      ], rows);
    } catch (e) { failed($('overview-security'), e); }
  },
};

export const channels = {
  async show() {
    const all = $('channels-all').checked;
    try {
      const r = await api('GET', '/api/channels' + (all ? '' : '?configured=true'));
      table($('channels-table'), [
        { title: 'channel', value: (c) => el('span', {}, el('strong', {}, c.name), c.display_name && c.display_name !== c.name ? ' ' + c.display_name : '') },
        { title: 'adapter', value: (c) => c.adapter },
        { title: 'status', value: (c) => status(c.status || (c.configured ? 'configured' : 'not configured')) },
        { title: 'agent', value: (c) => c.agent_name || '—' },
        { title: 'in / out / failed', value: (c) => [c.messages_in, c.messages_out, c.messages_failed].map((n) => n || 0).join(' / ') },
        { title: 'outbox', value: (c) => String(c.outbox_pending || 0) },
        { title: 'since', value: (c) => when(c.connected_since) },
        { title: 'last error', class: 'err', value: (c) => c.last_error || '' },
      ], r.channels || [], all ? 'no adapters' : 'No channel is configured (docs/channels.md); tick the box to see every adapter.');
    } catch (e) { failed($('channels-table'), e); }
  },
};
$('channels-all').addEventListener('change', () => channels.show());

export const mcp = {
  async show() {
    try {
      const [h, s] = await Promise.all([api('GET', '/api/mcp/health'), api('GET', '/api/mcp/servers?limit=100')]);
      const health = Object.fromEntries((h.health || []).map((x) => [x.id, x]));
      $('mcp-overall').replaceChildren('overall ', status(h.status), ' · ' + (h.count || 0) + ' servers');
      table($('mcp-table'), [
        { title: 'server', value: (v) => el('strong', {}, v.name) },
        { title: 'transport', value: (v) => v.transport },
        { title: 'status', value: (v) => status(v.status) },
        { title: 'tools', value: (v) => String(v.tool_count || 0) + (v.tools_changed ? ' (changed)' : '') },
        { title: 'last ok', value: (v) => when((health[v.name] || {}).last_ok) },
        { title: 'failures', value: (v) => String((health[v.name] || {}).consecutive_failures || 0) },
        { title: 'last error', class: 'err', value: (v) => v.last_error || '' },
        { title: '', value: (v) => el('button', { type: 'button', onclick: () => reconnect(v.name) }, 'Reconnect') },
      ], s.servers || [], 'No MCP server is configured (docs/mcp.md).');
    } catch (e) { failed($('mcp-table'), e); }
  },
};

async function reconnect(name) {
  try {
    const r = await api('POST', '/api/mcp/servers/' + encodeURIComponent(name) + '/reconnect');
    toast(name + ': ' + r.status + ', ' + r.tool_count + ' tools');
  } catch (e) {
    toast(name + ': ' + errText(e), true);
  }
  mcp.show();
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

export const topology = {
  async show() {
    const pic = $('topology-svg');
    try {
      const t = await api('GET', '/api/comms/topology?limit=200');
      const nodes = t.nodes || [];
      const edges = t.edges || [];
      // Nodes on a circle, grouped by kind; edges as lines with their
      // message counts. Enough for the tens of nodes a daemon has.
      nodes.sort((a, b) => (a.kind + a.id).localeCompare(b.kind + b.id));
      const pos = {};
      const cx = 400, cy = 250, r = nodes.length > 1 ? 190 : 0;
      nodes.forEach((n, i) => {
        const a = (2 * Math.PI * i) / Math.max(nodes.length, 1) - Math.PI / 2;
        pos[n.id] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
      });
      const parts = [svg('defs', {})];
      const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '18', refY: '5', markerWidth: '6', markerHeight: '6', orient: 'auto-start-reverse' });
      marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'arrowhead' }));
      parts[0].append(marker);
      for (const e of edges) {
        const a = pos[e.from], b = pos[e.to];
        if (!a || !b) continue;
        parts.push(svg('line', { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: 'edge', 'marker-end': 'url(#arrow)' }));
        parts.push(svg('text', { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 4, class: 'edge-label' }, e.kind + ' ×' + e.messages));
      }
      for (const n of nodes) {
        const [x, y] = pos[n.id];
        const g = svg('g', { class: 'node kind-' + n.kind + ' state-' + n.state });
        g.append(svg('circle', { cx: x, cy: y, r: 12 }));
        g.append(svg('text', { x, y: y + 26, class: 'node-label' }, n.name || n.id));
        g.append(svg('title', {}, n.id + ' (' + n.kind + ', ' + n.state + ')'));
        parts.push(g);
      }
      if (!nodes.length) parts.push(svg('text', { x: cx, y: cy, class: 'node-label' }, 'no agents, channels or routes yet'));
      pic.replaceChildren(...parts);
      const label = (id) => {
        const n = nodes.find((x) => x.id === id);
        return n && n.name && n.name !== id ? n.name + ' (' + id + ')' : id;
      };
      table($('topology-edges'), [
        { title: 'from', value: (e) => label(e.from) },
        { title: 'to', value: (e) => label(e.to) },
        { title: 'kind', value: (e) => e.kind },
        { title: 'messages', value: (e) => String(e.messages) },
      ], edges, 'No routes observed yet: edges appear as messages are routed (docs/events.md).');
    } catch (e) { failed($('topology-edges'), e); }
  },
};

export const audit = {
  async show() {
    await verify();
    try {
      const r = await api('GET', '/api/audit/recent?limit=25');
      table($('audit-recent'), [
        { title: 'seq', value: (e) => String(e.seq ?? e.id) },
        { title: 'time', value: (e) => when(e.timestamp) },
        { title: 'event', value: (e) => e.event_type },
        { title: 'actor', value: (e) => e.actor || '' },
        { title: 'outcome', value: (e) => status(e.outcome) },
        { title: 'details', class: 'wrap', value: (e) => e.details || '' },
      ], r.entries || []);
    } catch (e) { failed($('audit-recent'), e); }
  },
};

async function verify() {
  const out = $('audit-result');
  out.dataset.state = 'verifying';
  try {
    const v = await api('GET', '/api/audit/verify');
    grid(out, [
      ['chain', status(v.status)],
      ['entries', String(v.chain_length)],
      ['anchor', status(v.anchor_status)],
      ['tip hash', v.tip_hash || '—', 'mono'],
      v.broken_at ? ['broken at', String(v.broken_at), 'bad'] : ['verified', new Date().toLocaleTimeString()],
    ]);
    out.dataset.state = v.status;
  } catch (e) {
    out.dataset.state = 'error';
    failed(out, e);
  }
}
$('audit-verify').addEventListener('click', verify);
