// The processes page: one page of `GET /api/processes` at a time (search by
// name and status, sort by clicking a column header — again for the other
// order —, paging, the total), fetched again every second unless paused; a
// click on a row opens its info (process.js). The supervision tree
// (`GET /api/tree`) in a collapsible panel, fetched when opened and every
// 5 s while open.
//
// Must not: ask for more than one page of rows, keep more than one request
// in flight, or compute anything about processes itself.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const { el } = ProcessPanel;
  const table = $('processes');
  const tbody = table.tBodies[0];
  const state = { sort: 'reductions', order: 'desc', offset: 0, limit: 20, name: '', status: '' };
  let paused = false;
  let inFlight = false;
  let again = false;   // a change came while a request was in flight
  let total = 0;
  let statusTimer = null;

  function flash(text, isError) {
    const line = $('proc-status-line');
    line.textContent = text;
    line.className = 'status' + (isError ? ' error' : '');
    line.hidden = false;
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { line.hidden = true; }, 3000);
  }

  function nameOf(pid) {
    for (const tr of tbody.rows) if (tr.dataset.pid === pid) return tr.querySelector('.name').textContent;
    return '';
  }

  const info = ProcessPanel.create({
    panel: $('info-panel'), layout: $('top-layout'), flash, nameOf,
    onSelect(pid) {
      for (const tr of tbody.rows) tr.classList.toggle('selected', pid !== null && tr.dataset.pid === pid);
    },
  });

  const num = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : '');
  function bytesText(n) {
    if (typeof n !== 'number') return '';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }
  function cpuText(us) {
    if (typeof us !== 'number') return '';
    return us < 1000 ? `${us} µs` : us < 1e6 ? `${(us / 1000).toFixed(1)} ms` : `${(us / 1e6).toFixed(2)} s`;
  }
  function ageText(ms) {
    if (typeof ms !== 'number') return '';
    const s = Math.floor(ms / 1000);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function render(reply) {
    total = typeof reply.total === 'number' ? reply.total : 0;
    const rows = Array.isArray(reply.processes) ? reply.processes : [];
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const pid = String(r.pid);
      const tr = el('tr', { dataset: { pid } },
        el('td', { className: 'pid' }, pid),
        el('td', { className: 'name' }, String(r.name ?? '')),
        el('td', { className: 'state' }, String(r.status ?? '')),
        el('td', { className: 'reductions num' }, num(r.reductions)),
        el('td', { className: 'cpu num' }, cpuText(r.cpu)),
        el('td', { className: 'memory num' }, bytesText(r.memory)),
        el('td', { className: 'age num' }, ageText(r.age_ms)),
        el('td', { className: 'function' }, String(r.current_function ?? '')));
      if (pid === info.selected()) tr.classList.add('selected');
      frag.append(tr);
    }
    tbody.replaceChildren(frag);
    $('proc-total').textContent = `(${num(total)} in all)`;
    table.dataset.total = String(total);
    table.dataset.offset = String(state.offset);
    table.dataset.renders = String(Number(table.dataset.renders || 0) + 1);
    const first = rows.length ? state.offset + 1 : 0;
    $('proc-range').textContent = `${num(first)}–${num(state.offset + rows.length)} of ${num(total)}`;
    $('proc-prev').disabled = state.offset === 0;
    $('proc-next').disabled = state.offset + state.limit >= total;
    for (const th of table.tHead.rows[0].cells) {
      const active = th.dataset.sort === state.sort;
      th.classList.toggle('sorted', active);
      if (th.dataset.sort) th.setAttribute('aria-sort', active ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none');
    }
  }

  // `tick`: the once-a-second refresh, whose reply is dropped if the page
  // was paused meanwhile (a change the user makes is shown even paused).
  async function refresh(tick) {
    if (inFlight) { if (!tick) again = true; return; }
    inFlight = true;
    const params = new URLSearchParams({
      sort: state.sort, order: state.order, limit: String(state.limit), offset: String(state.offset),
    });
    if (state.name) params.set('name', state.name);
    if (state.status) params.set('status', state.status);
    try {
      const response = await App.fetch('/api/processes?' + params);
      const reply = await response.json();
      if (tick === true && paused) return;
      if (!response.ok) flash(String(reply.error || response.status), true);
      else if (reply.total > 0 && state.offset >= reply.total) {
        // The list shrank below this page: go to the last one.
        state.offset = Math.max(0, Math.floor((reply.total - 1) / state.limit) * state.limit);
        again = true;
      } else render(reply);
    } catch (e) {
      flash('cannot reach the daemon', true);
    } finally {
      inFlight = false;
      if (again) { again = false; refresh(); }
    }
  }

  table.tHead.addEventListener('click', (ev) => {
    const th = ev.target.closest('th[data-sort]');
    if (!th) return;
    const key = th.dataset.sort;
    if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
    else { state.sort = key; state.order = key === 'name' || key === 'pid' ? 'asc' : 'desc'; }
    state.offset = 0;
    refresh();
  });
  tbody.addEventListener('click', (ev) => {
    const tr = ev.target.closest('tr[data-pid]');
    if (tr) info.open(tr.dataset.pid);
  });
  let typing = null;
  $('proc-search').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.name = $('proc-search').value.trim(); state.offset = 0; refresh(); }, 200);
  });
  $('proc-status').addEventListener('change', () => { state.status = $('proc-status').value; state.offset = 0; refresh(); });
  $('proc-size').addEventListener('change', () => { state.limit = Number($('proc-size').value) || 20; state.offset = 0; refresh(); });
  $('proc-prev').addEventListener('click', () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $('proc-next').addEventListener('click', () => {
    if (state.offset + state.limit < total) { state.offset += state.limit; refresh(); }
  });
  $('proc-pause').addEventListener('click', () => {
    paused = !paused;
    $('proc-pause').textContent = paused ? 'resume' : 'pause';
    $('proc-pause').setAttribute('aria-pressed', String(paused));
    table.classList.toggle('paused', paused);
    if (!paused) refresh();
  });
  setInterval(() => { if (!paused && !document.hidden) refresh(true); }, 1000);
  refresh();

  // The supervision tree: each supervisor a <details> (open), folded
  // branches as `name × N`.
  function treeNode(node) {
    const pid = node.pid == null ? '' : String(node.pid);
    const label = el('span', { className: 'tree-label' });
    if (node.kind === 'group') label.append(el('span', { className: 'name' }, node.name), ` (${num(node.count)})`);
    else {
      label.append(el('span', { className: 'pid' }, pid), ' ', el('span', { className: 'name' }, node.name));
      if (typeof node.count === 'number') label.append(el('span', { className: 'count' }, ` × ${num(node.count)}`));
    }
    if (node.restart) label.append(el('span', { className: 'restart' }, ` ${node.restart}`));
    if (node.strategy) label.append(el('span', { className: 'strategy' }, ` ${node.strategy}`));
    const li = el('li', { dataset: { kind: node.kind, pid } });
    const children = Array.isArray(node.children) ? node.children : [];
    if (children.length) {
      const details = el('details', { open: true }, el('summary', null, label), el('ul', null, ...children.map(treeNode)));
      li.append(details);
    } else li.append(label);
    return li;
  }
  async function loadTree() {
    try {
      const response = await App.fetch('/api/tree');
      const reply = await response.json();
      const roots = Array.isArray(reply.roots) ? reply.roots : [];
      $('tree').replaceChildren(el('ul', { className: 'tree' }, ...roots.map(treeNode)));
    } catch (e) {
      $('tree').replaceChildren(el('p', { className: 'status error' }, 'cannot load the tree'));
    }
  }
  $('tree-panel').addEventListener('toggle', () => { if ($('tree-panel').open) loadTree(); });
  setInterval(() => { if ($('tree-panel').open && !paused && !document.hidden) loadTree(); }, 5000);
  $('tree').addEventListener('click', (ev) => {
    const label = ev.target.closest('.tree-label .pid');
    if (label && label.textContent) info.open(label.textContent);
  });
})();
