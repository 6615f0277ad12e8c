// The dashboard's one way to the API: fetch with the operator's credential,
// JSON in and out, the error envelope turned into an exception, and
// Server-Sent Events read from a fetch body (EventSource cannot send an
// Authorization header).

const KEY = 'fangd.apiKey';

export const credential = {
  key: () => sessionStorage.getItem(KEY) || '',
  set: (k) => sessionStorage.setItem(KEY, k),
  clear: () => sessionStorage.removeItem(KEY),
};

// csrfToken is the OIDC session's double-submit token (the fangd_csrf
// cookie), needed on writes authenticated by the session cookie.
function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)fangd_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

function headers(method, json, extra) {
  const h = Object.assign({}, extra);
  const k = credential.key();
  if (k) {
    h.Authorization = 'Bearer ' + k;
  } else if (method !== 'GET') {
    const c = csrfToken();
    if (c) h['X-CSRF-Token'] = c;
  }
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

export class APIError extends Error {
  constructor(status, body) {
    const env = body && typeof body === 'object' ? body : {};
    super(env.error || (typeof body === 'string' && body) || 'HTTP ' + status);
    this.status = status;
    this.code = env.code || '';
    this.requestId = env.request_id || '';
  }
}

// unauthorized is called on any 401, so the app can go back to sign-in.
let unauthorized = () => {};
export function onUnauthorized(f) { unauthorized = f; }

async function failure(res) {
  const text = await res.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
  const err = new APIError(res.status, body);
  if (res.status === 401) unauthorized(err);
  return err;
}

export async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: headers(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
  });
  if (!res.ok) throw await failure(res);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// stream sends one request and calls onEvent({event, id, data}) for each
// SSE event of the answer until it ends or opts.signal aborts; opts.onOpen
// runs once the server has answered 200.
export async function stream(method, path, body, onEvent, opts = {}) {
  const res = await fetch(path, {
    method,
    headers: headers(method, body !== undefined, Object.assign({ Accept: 'text/event-stream' }, opts.headers)),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
    cache: 'no-store',
    signal: opts.signal,
  });
  if (!res.ok) throw await failure(res);
  if (opts.onOpen) opts.onOpen();
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let ev = { event: 'message', id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      let line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (line === '') {
        if (ev.data.length) onEvent({ event: ev.event, id: ev.id, data: ev.data.join('\n') });
        ev = { event: 'message', id: null, data: [] };
        continue;
      }
      if (line.startsWith(':')) continue; // comment: keep-alive
      const c = line.indexOf(':');
      const field = c < 0 ? line : line.slice(0, c);
      let val = c < 0 ? '' : line.slice(c + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') ev.event = val;
      else if (field === 'data') ev.data.push(val);
      else if (field === 'id') ev.id = val;
    }
  }
}

// follow keeps a GET stream open: it reconnects after a drop with
// Last-Event-ID, so nothing is missed or doubled, and reports its state
// ("connecting", "live", "retrying", "stopped"). stop() ends it.
export function follow(path, onEvent, onState, lastId) {
  const ctl = new AbortController();
  let last = lastId ?? null;
  let delay = 1000;
  (async () => {
    while (!ctl.signal.aborted) {
      onState('connecting');
      try {
        await stream('GET', path, undefined, (ev) => {
          if (ev.id !== null) last = ev.id;
          onEvent(ev);
        }, {
          signal: ctl.signal,
          headers: last !== null ? { 'Last-Event-ID': String(last) } : {},
          onOpen: () => { delay = 1000; onState('live'); },
        });
      } catch (e) {
        if (ctl.signal.aborted) break;
        if (e instanceof APIError && e.status !== 429 && e.status < 500) {
          onState('stopped: ' + e.message);
          return;
        }
      }
      if (ctl.signal.aborted) break;
      onState('retrying');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
    onState('stopped');
  })();
  return { stop: () => ctl.abort() };
}
