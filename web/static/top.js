// The top page: the ten busiest processes of the last second (a `top`
// message every second), with `info` (stack trace + one-second call trace,
// shown in #info-panel beside the table by process.js, with `profile`,
// `trace` — its calls, arguments and return values, up to 50 calls or one
// second — and `kill`) and `kill`.
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

  const el = window.ProcessPanel.el;

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

  function nameOf(pid) {
    for (const tr of tbody.rows) {
      if (tr.dataset.pid === pid) return tr.querySelector('.name').textContent;
    }
    return '';
  }

  function flashKill(text, isError) {
    killStatus.textContent = text;
    killStatus.className = 'status' + (isError ? ' error' : '');
    killStatus.hidden = false;
    clearTimeout(killTimer);
    killTimer = setTimeout(() => { killStatus.hidden = true; }, 3000);
  }

  // The info panel (process.js): stack, trace, info, profile, kill.
  const info = ProcessPanel.create({
    panel, layout, flash: flashKill, nameOf,
    onSelect(pid) {
      selected = pid;
      for (const tr of tbody.rows) tr.classList.toggle('selected', pid !== null && tr.dataset.pid === pid);
    },
  });
  table.addEventListener('click', info.onAction);

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

  App.subscribe('top');
})();
