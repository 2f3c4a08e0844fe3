// One process's info panel, shared by /top and /processes: the panel's
// header (pid, name, `profile`, `trace`, `kill`, close), the stack trace and the
// one-second call trace of an `info` reply, every key of its `info` map
// (whatever keys the daemon sends), the profile, a `trace` (events with
// arguments and results, and why it ended), and the kill's outcome.
//
// Pages use the global `ProcessPanel`:
//   const p = ProcessPanel.create({ panel, layout, flash, nameOf, onSelect })
//     panel     the <section> it fills
//     layout    an element that gets `with-panel` while the panel is open
//     flash     fn(text, isError): a short status line of the page
//     nameOf    fn(pid): the name the page shows for a pid ('' if none)
//     onSelect  fn(pid or null): the page marks the selected row
//   p.open(pid)   asks for its info (and shows "tracing…" until it comes)
//   p.close()     p.selected()   p.onAction(ev)  (a click on a button[data-pid])
//
// Must not: subscribe to anything, poll, or know the page's table.
'use strict';
(function () {
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

  function listSection(heading, cls, lines, emptyText) {
    const pre = el('pre', { className: cls });
    pre.textContent = lines.length ? lines.join('\n') : emptyText;
    return el('section', null, el('h3', null, heading), pre);
  }

  // Every key of the info map, in the daemon's order: lists as their items.
  function valueText(v) {
    if (typeof v === 'string') return v;
    if (Array.isArray(v)) return v.length ? v.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join(', ') : '[]';
    return JSON.stringify(v);
  }

  function infoSection(info) {
    const dl = el('dl', { className: 'process-info' });
    for (const [k, v] of Object.entries(info)) {
      dl.append(el('dt', null, k), el('dd', { dataset: { key: k } }, valueText(v)));
    }
    return el('details', { className: 'info' }, el('summary', null, 'process info'), dl);
  }

  function create(opts) {
    const { panel, layout } = opts;
    const flash = opts.flash || (() => {});
    const nameOf = opts.nameOf || (() => '');
    const onSelect = opts.onSelect || (() => {});
    let selected = null;

    function header(pid, name) {
      const close = el('button', { type: 'button', className: 'close secondary', title: 'close (Esc)' }, '×');
      close.setAttribute('aria-label', 'close');
      close.addEventListener('click', hide);
      return el('header', { className: 'panel-head' },
        el('h2', null, pid, name ? el('span', { className: 'name' }, ' ', name) : ''),
        button('profile', pid), button('trace', pid), button('kill', pid), close);
    }

    function show(pid, name, ...sections) {
      panel.replaceChildren(header(pid, name), ...sections);
      panel.hidden = false;
      if (layout) layout.classList.add('with-panel');
      // Side by side on wide screens; below the table on narrow ones.
      if (panel.getBoundingClientRect().top > window.innerHeight * 0.6) {
        panel.scrollIntoView({ block: 'start', behavior: 'smooth' });
      }
    }

    function hide() {
      panel.hidden = true;
      panel.replaceChildren();
      delete panel.dataset.pid;
      if (layout) layout.classList.remove('with-panel');
      selected = null;
      onSelect(null);
    }

    function open(pid) {
      if (!App.send({ type: 'info', pid })) return flash('not connected', true);
      selected = pid;
      onSelect(pid);
      panel.dataset.pid = pid;
      show(pid, nameOf(pid), el('p', { className: 'pending' }, 'tracing for one second…'));
    }

    function showProfile(...content) {
      const old = panel.querySelector('section.profile');
      const section = el('section', { className: 'profile' },
        el('h3', null, 'where it spends its time (native samples)'), ...content);
      if (old) old.replaceWith(section);
      else panel.querySelector('.panel-head')?.after(section);
    }

    // The trace's section (pid, call, result, when, and why it ended), one
    // at a time, replaced by each new trace.
    function showTrace(...content) {
      const old = panel.querySelector('section.call-trace');
      const section = el('section', { className: 'call-trace' },
        el('h3', null, 'calls traced (50 calls or one second)'), ...content);
      if (old) old.replaceWith(section);
      else panel.querySelector('.panel-head')?.after(section);
    }

    // A click on any button[data-pid] of the page's table or the panel.
    function onAction(ev) {
      const btn = ev.target.closest('button[data-pid]');
      if (!btn) return false;
      const pid = btn.dataset.pid;
      if (btn.classList.contains('info')) {
        open(pid);
      } else if (btn.classList.contains('profile')) {
        if (!App.send({ type: 'profile', pid })) return flash('not connected', true);
        showProfile(el('p', { className: 'pending' }, 'profiling for one second…'));
      } else if (btn.classList.contains('trace')) {
        if (!App.send({ type: 'trace', pid })) return flash('not connected', true);
        showTrace(el('p', { className: 'pending' }, 'tracing…'));
      } else if (btn.classList.contains('kill')) {
        if (!App.send({ type: 'kill', pid })) return flash('not connected', true);
        flash(`killing ${pid}…`);
      } else {
        return false;
      }
      return true;
    }
    panel.addEventListener('click', onAction);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !panel.hidden) hide();
    });

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
      show(pid, name, ...sections);
    });

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

    App.on('kill', (msg) => {
      flash(msg.killed ? `killed ${msg.pid}` : `${msg.pid} was not alive`, !msg.killed);
      if (String(msg.pid) === selected && !panel.hidden) {
        const head = panel.querySelector('.panel-head');
        if (head && !panel.querySelector('.dead')) head.after(el('p', { className: 'dead' }, 'killed'));
      }
    });

    App.on('error', (msg) => flash(String(msg.message || 'error'), true));

    return { open, close: hide, selected: () => selected, onAction, el, button };
  }

  window.ProcessPanel = { create, el, button };
})();
