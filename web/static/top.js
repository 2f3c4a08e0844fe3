// The top page: the ten busiest processes of the last second, with `info`
// (stack trace + one-second call trace, shown in #info-panel) and `kill`.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const table = $('top');
  const tbody = table.tBodies[0];
  const panel = $('info-panel');
  const killStatus = $('kill-status');
  let selected = null;   // pid shown in the info panel
  let killTimer = null;

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
        el('td', { className: 'actions' }, button('info', pid), ' ', button('kill', pid)));
      if (pid === selected) tr.classList.add('selected');
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    $('top-empty').hidden = rows.length > 0;
  }

  function showPanel(title, ...sections) {
    panel.replaceChildren(el('h2', null, title), ...sections);
    panel.hidden = false;
  }

  function listSection(heading, lines, emptyText) {
    const pre = el('pre', { className: heading.toLowerCase().replace(/\W+/g, '-') });
    pre.textContent = lines.length ? lines.join('\n') : emptyText;
    return el('section', null, el('h3', null, heading), pre);
  }

  function infoSection(info) {
    const dl = el('dl', { className: 'process-info' });
    for (const [k, v] of Object.entries(info)) {
      dl.append(el('dt', null, k), el('dd', null, typeof v === 'string' ? v : JSON.stringify(v)));
    }
    return el('section', null, el('h3', null, 'info'), dl);
  }

  function flashKill(text, isError) {
    killStatus.textContent = text;
    killStatus.className = 'status' + (isError ? ' error' : '');
    killStatus.hidden = false;
    clearTimeout(killTimer);
    killTimer = setTimeout(() => { killStatus.hidden = true; }, 3000);
  }

  table.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-pid]');
    if (!btn) return;
    const pid = btn.dataset.pid;
    if (btn.classList.contains('info')) {
      if (!App.send({ type: 'info', pid })) return flashKill('not connected', true);
      selected = pid;
      for (const tr of tbody.rows) tr.classList.toggle('selected', tr.dataset.pid === pid);
      panel.dataset.pid = pid;
      showPanel(`${pid}`, el('p', { className: 'pending' }, 'tracing for one second…'));
    } else if (btn.classList.contains('kill')) {
      if (!App.send({ type: 'kill', pid })) return flashKill('not connected', true);
      flashKill(`killing ${pid}…`);
    }
  });

  App.on('top', (msg) => renderRows(Array.isArray(msg.rows) ? msg.rows : []));

  App.on('info', (msg) => {
    const pid = String(msg.pid);
    panel.dataset.pid = pid;
    const stack = Array.isArray(msg.stacktrace) ? msg.stacktrace.map(String) : [];
    const trace = Array.isArray(msg.trace) ? msg.trace.map(String) : [];
    const sections = [];
    if (msg.info == null) sections.push(el('p', { className: 'dead' }, 'not alive'));
    else if (typeof msg.info === 'object') sections.push(infoSection(msg.info));
    sections.push(listSection('stacktrace', stack, '(empty)'));
    sections.push(listSection('trace', trace, '(no calls traced)'));
    showPanel(pid, ...sections);
  });

  App.on('kill', (msg) => {
    flashKill(msg.killed ? `killed ${msg.pid}` : `${msg.pid} was not alive`, !msg.killed);
  });

  App.on('error', (msg) => flashKill(String(msg.message || 'error'), true));

  App.subscribe('top');
})();
