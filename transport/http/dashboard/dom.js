// Small DOM helpers. Text always goes in as text nodes, never as markup, so
// nothing the API returns can become markup.

export const $ = (id) => document.getElementById(id);

// el('td', {class: 'x', dataset: {id: 1}, onclick: f}, 'text', child...)
export function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'dataset') Object.assign(n.dataset, v);
    else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : String(c));
  }
  return n;
}

// table fills t with a header row and one row per item.
export function table(t, columns, items, empty) {
  t.replaceChildren(el('thead', {}, el('tr', {}, columns.map((c) => el('th', {}, c.title)))));
  const body = el('tbody');
  for (const it of items) body.append(el('tr', {}, columns.map((c) => el('td', { class: c.class }, c.value(it)))));
  if (!items.length) body.append(el('tr', {}, el('td', { colspan: columns.length, class: 'hint' }, empty || 'nothing yet')));
  t.append(body);
}

// grid fills g with label/value cards.
export function grid(g, pairs) {
  g.replaceChildren(...pairs.map(([k, v, cls]) => el('div', { class: 'kv' }, el('span', { class: 'k' }, k), el('span', { class: 'v ' + (cls || '') }, v))));
}

export function status(s) {
  const good = ['ok', 'valid', 'connected', 'healthy', 'active', 'running', 'live', 'approved'];
  const bad = ['error', 'broken', 'down', 'degraded', 'mismatch', 'failed', 'gone'];
  const cls = good.includes(s) ? 'good' : bad.includes(s) ? 'bad' : 'meh';
  return el('span', { class: 'pill ' + cls }, s || '—');
}

export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  return isNaN(d) ? String(ts) : d.toLocaleString();
}

let toastTimer;
export function toast(msg, bad) {
  const t = $('toast');
  t.textContent = msg;
  t.className = 'toast' + (bad ? ' bad' : '');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.add('hidden'), 5000);
}

export function errText(e) {
  return e.code ? e.message + ' (' + e.code + ')' : e.message;
}
