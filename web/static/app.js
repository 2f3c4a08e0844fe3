// Shared by every page: the one WebSocket connection of this tab.
//
// - connects to ws://HOST/ws (wss:// under https),
// - shows the state (connecting / connected / disconnected) in #ws-state,
// - reconnects by itself with exponential backoff (250 ms .. 5 s, jittered),
// - re-sends the page's subscriptions after every reconnect,
// - with `--access-token`: takes the token from the URL's fragment
//   (`#token=…`, which no request carries), keeps it in this tab's
//   sessionStorage (this origin only: not other ports, not other tabs),
//   removes it from the address bar, and sends it on the WebSocket
//   handshake (subprotocol `bearer.TOKEN`, next to `system`) and on API
//   calls (`Authorization: Bearer`). Without it, the page says how to get
//   it (`system status`).
//
// Pages use the global `App`:
//   App.on(type, fn)      call fn(msg) for every server message of that type
//   App.onOpen(fn)        call fn() after every (re)connect, subscriptions already sent
//   App.onClose(fn)       call fn() when the connection goes away
//   App.subscribe(topic)  subscribe now (if connected) and after every reconnect
//   App.send(msg)         send a JSON message; returns false when not connected
//   App.fetch(path, opts) fetch() with the access token, if the tab has one
//   App.state, App.hello  current state, last `hello` message (or null)
//
// Must not: open more than one WebSocket per tab, know any page's messages,
// or put the token anywhere a request to another server could carry it
// (no cookie, no URL).
'use strict';
(function () {
  const MIN_DELAY_MS = 250;
  const MAX_DELAY_MS = 5000;

  const handlers = new Map();
  const openHooks = [];
  const closeHooks = [];
  const topics = new Set();
  let ws = null;
  let state = 'disconnected';
  let delay = MIN_DELAY_MS;
  let timer = null;
  let hello = null;
  const TOKEN_KEY = 'system_token';

  // `#token=…` (from `system status`) into sessionStorage, out of the address bar.
  function takeToken() {
    const found = /(?:^#|&)token=([0-9A-Za-z]+)/.exec(location.hash);
    if (!found) return false;
    try { sessionStorage.setItem(TOKEN_KEY, found[1]); } catch (e) { /* storage off */ }
    history.replaceState(history.state, '', location.pathname + location.search);
    return true;
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  function authFetch(path, opts) {
    const options = Object.assign({}, opts || {});
    const headers = new Headers(options.headers || {});
    const t = token();
    if (t) headers.set('Authorization', 'Bearer ' + t);
    options.headers = headers;
    return fetch(path, options);
  }

  // Shown while the daemon refuses this tab for want of its token.
  function showTokenNeeded(needed) {
    let el = document.getElementById('token-needed');
    if (!needed) { if (el) el.hidden = true; return; }
    if (!el) {
      el = document.createElement('p');
      el.id = 'token-needed';
      el.className = 'status error';
      el.setAttribute('role', 'alert');
      const command = document.createElement('code');
      command.textContent = 'system status';
      el.append('This daemon requires its access token' +
        (token() ? ' and refused the one this tab has' : '') +
        '. On its machine, run ', command,
        ' and open the URL it prints (…/#token=…) in this tab.');
      const main = document.querySelector('main') || document.body;
      main.insertBefore(el, main.firstChild);
    }
    el.hidden = false;
  }

  // After a connection that never opened: was it for want of the token?
  function probeToken() {
    authFetch('/health', { cache: 'no-store' })
      .then((r) => showTokenNeeded(r.status === 401), () => {});
  }

  function setState(s, detail) {
    state = s;
    const el = document.getElementById('ws-state');
    if (el) {
      el.textContent = s;
      el.dataset.state = s;
      el.className = 'ws-state ' + s;
      el.title = detail || '';
    }
  }

  function run(fn, arg) {
    try { fn(arg); } catch (e) { console.error(e); }
  }

  function emit(msg) {
    const list = handlers.get(msg.type);
    if (list) for (const fn of list) run(fn, msg);
  }

  function rawSend(sock, msg) {
    try { sock.send(JSON.stringify(msg)); return true; } catch (e) { return false; }
  }

  function connect() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (ws) return;
    setState('connecting');
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const url = `${proto}://${location.host}/ws`;
    const t = token();
    let sock;
    let opened = false;
    try {
      sock = t ? new WebSocket(url, ['system', 'bearer.' + t]) : new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (ws !== sock) return;
      opened = true;
      delay = MIN_DELAY_MS;
      showTokenNeeded(false);
      setState('connected');
      for (const topic of topics) rawSend(sock, { type: 'subscribe', topic });
      for (const fn of openHooks) run(fn);
    };
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { console.warn('bad frame', ev.data); return; }
      if (!msg || typeof msg.type !== 'string') return;
      if (msg.type === 'hello') hello = msg;
      if (msg.type === 'error') console.warn('server error:', msg.message);
      emit(msg);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      for (const fn of closeHooks) run(fn);
      if (!opened) probeToken();
      scheduleReconnect();
    };
    sock.onerror = () => { /* a close event follows */ };
  }

  function scheduleReconnect() {
    if (timer) return;
    const wait = Math.round(delay * (0.75 + Math.random() * 0.5));
    delay = Math.min(delay * 2, MAX_DELAY_MS);
    setState('disconnected', `retrying in ${(wait / 1000).toFixed(1)} s`);
    timer = setTimeout(connect, wait);
  }

  function isOpen() {
    return ws !== null && ws.readyState === 1; // WebSocket.OPEN
  }

  window.App = {
    get state() { return state; },
    get hello() { return hello; },
    on(type, fn) {
      if (!handlers.has(type)) handlers.set(type, []);
      handlers.get(type).push(fn);
    },
    onOpen(fn) { openHooks.push(fn); },
    onClose(fn) { closeHooks.push(fn); },
    subscribe(topic) {
      if (topics.has(topic)) return;
      topics.add(topic);
      if (isOpen()) rawSend(ws, { type: 'subscribe', topic });
    },
    send(msg) { return isOpen() && rawSend(ws, msg); },
    fetch: authFetch,
    isOpen,
  };

  takeToken();
  // A token URL opened in this tab later: take it and connect at once.
  window.addEventListener('hashchange', () => {
    if (!takeToken()) return;
    if (ws) { const old = ws; ws = null; old.close(); }
    connect();
  });

  // Retry at once when the network or the tab comes back.
  window.addEventListener('online', () => { if (!ws) connect(); });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && !ws) connect();
  });

  // Start after every deferred page script has registered its handlers.
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', connect);
  } else {
    setTimeout(connect, 0);
  }
})();
