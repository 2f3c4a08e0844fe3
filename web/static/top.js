// The top page: the ten busiest processes of the last second (a `top`
// message every second), with `info` (stack trace + one-second call trace,
// shown in #info-panel beside the table), `profile`, `trace` (its calls,
// arguments and return values, up to 50 calls or one second) and `kill`.
//
// Must not: poll or compute anything itself (the daemon measures; this only
// renders), or keep per-row state across refreshes other than the selection.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const table = $('top');
  const tbody = table.tBodies[0];
  const panel = $('info-panel');
  const killStatus = $('kill-status');
  const layout = $('top-layout');
  const stuckBanner = $('stuck-banner');
  let selected = null;   // pid shown in the info panel
  let killTimer = null;
  let lastTop = 0;       // when the last `top` message came (ms)
  let lastMessage = null; // the last `top` message, to re-render on a sort change
  const TITLES = {
    cpu: 'busiest processes, last second',
    memory: 'biggest holders of memory, now',
  };

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) for (const [k, v] of Object.entries(props)) {
      if (k === 'dataset') Object.assign(e.dataset, v); else e[k] = v;
    }
    e.append(...children);
    return e;
  }

  function button(cls, pid) {
    return el('button', { type: 'button', className: cls, dataset: { pid } }, cls);
  }

  function cpuText(cpu) {
    return typeof cpu === 'number' ? `${cpu.toFixed(1)} %` : '';
  }

  // Bytes as people read them: 812 B, 1.5 KiB, 256.0 MiB.
  function bytesText(n) {
    if (typeof n !== 'number') return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function renderRows(rows) {
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const pid = String(r.pid);
      const tr = el('tr', { dataset: { pid } },
        el('td', { className: 'pid' }, pid),
        el('td', { className: 'name' }, r.name == null ? '' : String(r.name)),
        el('td', { className: 'cpu num' }, cpuText(r.cpu)),
        el('td', { className: 'reductions num' },
          typeof r.reductions === 'number' ? r.reductions.toLocaleString('en-US') : String(r.reductions ?? '')),
        el('td', { className: 'memory num' }, bytesText(r.memory)),
        el('td', { className: 'actions' }, button('info', pid), ' ', button('kill', pid)));
      if (pid === selected) tr.classList.add('selected');
      if (typeof r.stuck_ms === 'number') {
        tr.classList.add('stuck');
        tr.title = `holding a scheduler in one poll for ${r.stuck_ms} ms`;
        // Its native stack when first seen stuck (innermost first).
        if (Array.isArray(r.stuck_stack)) tr.title += r.stuck_stack.map((f) => `\n  ${f}`).join('');
      }
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    // The daemon's long-schedule monitor marks a process stuck in one poll.
    const stuck = rows.filter((r) => typeof r.stuck_ms === 'number');
    stuckBanner.textContent = stuck.map((r) =>
      `${r.pid} ${r.name} has held a scheduler for ${r.stuck_ms.toLocaleString('en-US')} ms without yielding`).join('; ');
    stuckBanner.hidden = stuck.length === 0;
    $('top-empty').hidden = rows.length > 0;
  }

  // The panel's header: pid and name, its own `kill`, and a close button.
  function panelHeader(pid, name) {
    const close = el('button', { type: 'button', className: 'close secondary', title: 'close (Esc)' }, '×');
    close.setAttribute('aria-label', 'close');
    close.addEventListener('click', hidePanel);
    return el('header', { className: 'panel-head' },
      el('h2', null, pid, name ? el('span', { className: 'name' }, ' ', name) : ''),
      button('profile', pid), button('trace', pid), button('kill', pid), close);
  }

  function showPanel(pid, name, ...sections) {
    panel.replaceChildren(panelHeader(pid, name), ...sections);
    panel.hidden = false;
    layout.classList.add('with-panel');
    // Side by side on wide screens; below the table on narrow ones.
    if (panel.getBoundingClientRect().top > window.innerHeight * 0.6) {
      panel.scrollIntoView({ block: 'start', behavior: 'smooth' });
    }
  }

  function hidePanel() {
    panel.hidden = true;
    panel.replaceChildren();
    delete panel.dataset.pid;
    layout.classList.remove('with-panel');
    selected = null;
    for (const tr of tbody.rows) tr.classList.remove('selected');
  }

  function nameOf(pid) {
    for (const tr of tbody.rows) {
      if (tr.dataset.pid === pid) return tr.querySelector('.name').textContent;
    }
    return '';
  }

  function listSection(heading, cls, lines, emptyText) {
    const pre = el('pre', { className: cls });
    pre.textContent = lines.length ? lines.join('\n') : emptyText;
    return el('section', null, el('h3', null, heading), pre);
  }

  function infoSection(info) {
    const dl = el('dl', { className: 'process-info' });
    for (const [k, v] of Object.entries(info)) {
      dl.append(el('dt', null, k), el('dd', null, typeof v === 'string' ? v : JSON.stringify(v)));
    }
    return el('details', { className: 'info' }, el('summary', null, 'process info'), dl);
  }

  function flashKill(text, isError) {
    killStatus.textContent = text;
    killStatus.className = 'status' + (isError ? ' error' : '');
    killStatus.hidden = false;
    clearTimeout(killTimer);
    killTimer = setTimeout(() => { killStatus.hidden = true; }, 3000);
  }

  function onAction(ev) {
    const btn = ev.target.closest('button[data-pid]');
    if (!btn) return;
    const pid = btn.dataset.pid;
    if (btn.classList.contains('info')) {
      if (!App.send({ type: 'info', pid })) return flashKill('not connected', true);
      selected = pid;
      for (const tr of tbody.rows) tr.classList.toggle('selected', tr.dataset.pid === pid);
      panel.dataset.pid = pid;
      showPanel(pid, nameOf(pid), el('p', { className: 'pending' }, 'tracing for one second…'));
    } else if (btn.classList.contains('profile')) {
      if (!App.send({ type: 'profile', pid })) return flashKill('not connected', true);
      showProfile(el('p', { className: 'pending' }, 'profiling for one second…'));
    } else if (btn.classList.contains('kill')) {
      if (!App.send({ type: 'kill', pid })) return flashKill('not connected', true);
      flashKill(`killing ${pid}…`);
    }
  }
  table.addEventListener('click', onAction);
  panel.addEventListener('click', onAction);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !panel.hidden) hidePanel();
  });

  // The daemon sends both lists every second; the switch picks one.
  function sortBy() {
    return $('sort-memory').checked ? 'memory' : 'cpu';
  }
  function render() {
    if (!lastMessage) return;
    const rows = sortBy() === 'memory' ? lastMessage.by_memory : lastMessage.rows;
    renderRows(Array.isArray(rows) ? rows : []);
  }
  for (const id of ['sort-cpu', 'sort-memory']) {
    $(id).addEventListener('change', () => {
      $('top-title').textContent = TITLES[sortBy()];
      table.dataset.sort = sortBy();
      render();
    });
  }
  table.dataset.sort = sortBy();

  App.on('top', (msg) => {
    lastTop = Date.now();
    lastMessage = msg;
    render();
  });
  // With every scheduler held, no message can come: say so rather than
  // showing a stale table as if it were live.
  setInterval(() => {
    const late = Date.now() - lastTop;
    if (lastTop && late > 2500) {
      stuckBanner.textContent = `no update for ${(late / 1000).toFixed(1)} s: a process may be holding the scheduler (the daemon's log names it)`;
      stuckBanner.hidden = false;
    }
  }, 500);

  App.on('info', (msg) => {
    const pid = String(msg.pid);
    if (pid !== selected) return; // the panel was closed or shows another process
    panel.dataset.pid = pid;
    const stack = Array.isArray(msg.stacktrace) ? msg.stacktrace.map(String) : [];
    const trace = Array.isArray(msg.trace) ? msg.trace.map(String) : [];
    const sections = [];
    if (msg.info == null) sections.push(el('p', { className: 'dead' }, 'not alive'));
    sections.push(listSection('current stack trace', 'stacktrace', stack, '(empty)'));
    sections.push(listSection('calls traced for one second', 'trace', trace, '(no calls traced)'));
    if (msg.info != null && typeof msg.info === 'object') sections.push(infoSection(msg.info));
    const name = msg.info && typeof msg.info.name === 'string' ? msg.info.name : nameOf(pid);
    showPanel(pid, name, ...sections);
  });

  // The profile's section of the panel (one at a time, replaced).
  function showProfile(...content) {
    const old = panel.querySelector('section.profile');
    const section = el('section', { className: 'profile' },
      el('h3', null, 'where it spends its time (native samples)'), ...content);
    if (old) old.replaceWith(section);
    else panel.querySelector('.panel-head')?.after(section);
  }

  App.on('profile', (msg) => {
    if (String(msg.pid) !== selected || panel.hidden) return;
    const samples = typeof msg.samples === 'number' ? msg.samples : 0;
    const functions = Array.isArray(msg.functions) ? msg.functions : [];
    const summary = el('p', { className: 'note' },
      `${samples.toLocaleString('en-US')} samples in ${Number(msg.ms || 0).toLocaleString('en-US')} ms` +
      (samples === 0 ? ': it was never inside a poll' : ''));
    const list = el('ol', { className: 'hot-functions' });
    for (const f of functions) {
      const share = samples ? (100 * f.samples / samples) : 0;
      const bar = el('span', { className: 'share-bar' });
      bar.style.width = `${share.toFixed(1)}%`;
      list.append(el('li', { dataset: { share: share.toFixed(1) } },
        el('span', { className: 'share' }, `${share.toFixed(1)} %`), ' ',
        el('span', { className: 'function' }, String(f.function)), bar));
    }
    showProfile(summary, list);
  });

  // The trace button of the info panel: asks for a `trace` of the panel's
  // process and shows its events (pid, call, result, when) and why it
  // ended, in one section replaced by each new trace.
  function traceButton() {
    function showTrace(...content) {
      const old = panel.querySelector('section.call-trace');
      const section = el('section', { className: 'call-trace' },
        el('h3', null, 'calls traced (50 calls or one second)'), ...content);
      if (old) old.replaceWith(section);
      else panel.querySelector('.panel-head')?.after(section);
    }
    panel.addEventListener('click', (ev) => {
      const btn = ev.target.closest('button.trace[data-pid]');
      if (!btn) return;
      if (!App.send({ type: 'trace', pid: btn.dataset.pid })) return flashKill('not connected', true);
      showTrace(el('p', { className: 'pending' }, 'tracing…'));
    });
    App.on('trace', (msg) => {
      if (String(msg.pid) !== selected || panel.hidden) return;
      const events = Array.isArray(msg.events) ? msg.events : [];
      const list = el('ol', { className: 'trace-events' });
      for (const e of events) {
        list.append(el('li', null,
          el('span', { className: 'at num' }, `${Number(e.at_ms || 0)} ms `),
          el('span', { className: 'pid' }, String(e.pid)), ' ',
          el('span', { className: 'call' }, String(e.call)),
          e.result == null ? '' : el('span', { className: 'result' }, ` → ${e.result}`)));
      }
      showTrace(el('p', { className: 'note trace-ended', dataset: { ended: String(msg.ended) } },
        `${events.length} events; ended by ${msg.ended}`), list);
    });
  }
  traceButton();

  App.on('kill', (msg) => {
    flashKill(msg.killed ? `killed ${msg.pid}` : `${msg.pid} was not alive`, !msg.killed);
    if (String(msg.pid) === selected && !panel.hidden) {
      const head = panel.querySelector('.panel-head');
      if (head && !panel.querySelector('.dead')) head.after(el('p', { className: 'dead' }, 'killed'));
    }
  });

  App.on('error', (msg) => flashKill(String(msg.message || 'error'), true));

  App.subscribe('top');
})();
