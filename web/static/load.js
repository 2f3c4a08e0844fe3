// The load page: sets the synthetic load and charts the last 60 s of metrics.
// Keeps at most 600 smoothed points per chart in fixed-size rings and redraws
// at most once per animation frame.
// Must not: let memory grow with time, or redraw more than once per frame.
'use strict';
(function () {
  const POINTS = 600;   // 60 s at one sample per 100 ms
  const SMOOTH = 10;    // moving average over 10 samples

  const $ = (id) => document.getElementById(id);
  const form = $('load-form');
  const jobsInput = $('jobs');
  const rateInput = $('failure-rate');
  const statusEl = $('load-status');
  const jobsCanvas = $('jobs-chart');
  const usageCanvas = $('usage-chart');

  const jobs = new Chart.Ring(POINTS);
  const usage = new Chart.Ring(POINTS);
  const jobsAvg = new Chart.MovingAverage(SMOOTH);
  const usageAvg = new Chart.MovingAverage(SMOOTH);
  // One ring per scheduler (index = scheduler - 1), made when first seen;
  // at most the node's maximum, so memory stays bounded.
  const each = [];
  const COLORS = ['#5c940d', '#1971c2', '#ae3ec9', '#e67700', '#0c8599', '#c2255c', '#495057', '#2b8a3e'];
  const schedulersForm = $('schedulers-form');
  const schedulersInput = $('schedulers-online');
  let latest = null;      // last raw sample
  let seeded = false;     // inputs filled from the server once
  let frameQueued = false;
  let statusTimer = null;

  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : 0);

  function clearSeries() {
    jobs.clear(); usage.clear(); jobsAvg.clear(); usageAvg.clear();
    for (const e of each) { e.ring.clear(); e.avg.clear(); }
  }

  function addSample(s) {
    let t = typeof s.t_ms === 'number' ? s.t_ms : (jobs.len ? jobs.lastT() + 100 : 0);
    if (jobs.len && t < jobs.lastT()) clearSeries(); // the daemon restarted
    jobs.push(t, jobsAvg.push(num(s.jobs_per_sec)));
    usage.push(t, usageAvg.push(num(s.scheduler_usage) * 100));
    const per = Array.isArray(s.scheduler_usages) ? s.scheduler_usages : [];
    for (let i = 0; i < per.length && i < 1024; i++) {
      if (!each[i]) each[i] = { ring: new Chart.Ring(POINTS), avg: new Chart.MovingAverage(SMOOTH) };
      each[i].ring.push(t, each[i].avg.push(num(per[i]) * 100));
    }
    latest = s;
  }

  function showStatus(text, isError) {
    statusEl.textContent = text;
    statusEl.className = 'status' + (isError ? ' error' : '');
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { statusEl.textContent = ''; }, 4000);
  }

  function setText(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function seedInputs(s) {
    if (seeded) return;
    seeded = true;
    if (document.activeElement !== jobsInput && jobsInput.value === '') jobsInput.value = String(num(s.workers));
    if (document.activeElement !== rateInput && rateInput.value === '') rateInput.value = String(num(s.failure_rate));
  }

  function render() {
    frameQueued = false;
    if (latest) {
      setText('memory', num(latest.memory_mb).toFixed(1));
      setText('workers', num(latest.workers).toLocaleString('en-US'));
      setText('processes', num(latest.processes).toLocaleString('en-US'));
      setText('failed-latest', Chart.rate(num(latest.failed_per_sec)));
      // (The input is filled from hello and the schedulers reply only: a
      // sample must not refill it while someone is typing a new count.)
      if (typeof latest.schedulers === 'number') setText('schedulers', String(latest.schedulers));
    }
    const online = latest && typeof latest.schedulers === 'number' ? latest.schedulers : 0;
    const per = latest && Array.isArray(latest.scheduler_usages) ? latest.scheduler_usages : [];
    const eachText = per.map((v, i) => `${i + 1}: ${Math.round(num(v) * 100)} %`).join(', ');
    setText('usage-each', eachText || '–');
    $('usage-each').dataset.values = per.map((v) => String(Math.round(num(v) * 1000) / 1000)).join(',');
    const lines = each.slice(0, online).filter(Boolean).map((e, i) => ({ ring: e.ring, color: COLORS[i % COLORS.length] }));
    const j = jobs.len ? jobs.lastV() : 0;
    const u = usage.len ? usage.lastV() : 0;
    const jl = $('jobs-latest');
    jl.textContent = Chart.rate(j);
    jl.dataset.value = String(Math.round(j * 100) / 100);
    const ul = $('usage-latest');
    ul.textContent = `${Math.round(u)} %`;
    ul.dataset.value = String(Math.round(u * 10) / 10);
    Chart.draw(jobsCanvas, jobs, { minMax: 10, format: Chart.short, color: '#2a6fdb' });
    Chart.draw(usageCanvas, usage, { max: 100, format: (v) => `${Math.round(v)}%`, color: '#d9480f', lines });
  }

  function redraw() {
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(render);
  }

  App.on('hello', (msg) => {
    if (typeof msg.schedulers === 'number') {
      setText('schedulers', String(msg.schedulers));
      if (document.activeElement !== schedulersInput) schedulersInput.value = String(msg.schedulers);
    }
    if (typeof msg.max_schedulers === 'number') {
      setText('max-schedulers', String(msg.max_schedulers));
      schedulersInput.max = String(msg.max_schedulers);
    }
  });

  App.on('schedulers', (msg) => {
    if (typeof msg.online === 'number') {
      setText('schedulers', String(msg.online));
      if (document.activeElement !== schedulersInput) schedulersInput.value = String(msg.online);
    }
    showStatus(`schedulers online: ${num(msg.online)} of ${num(msg.max)}`);
  });

  schedulersForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = schedulersInput.value.trim();
    if (!/^\d+$/.test(text)) return showStatus('schedulers online: a whole number ≥ 1, please', true);
    if (!App.send({ type: 'schedulers', online: Number(text) })) showStatus('not connected', true);
  });

  App.on('history', (msg) => {
    clearSeries();
    const samples = Array.isArray(msg.samples) ? msg.samples : [];
    for (const s of samples.slice(-POINTS)) addSample(s);
    if (latest) seedInputs(latest);
    redraw();
  });

  App.on('metrics', (msg) => {
    const s = msg.sample;
    if (!s || typeof s !== 'object') return;
    addSample(s);
    seedInputs(s);
    redraw();
  });

  App.on('load', (msg) => {
    if (typeof msg.jobs === 'number' && document.activeElement !== jobsInput) jobsInput.value = String(msg.jobs);
    if (typeof msg.failure_rate === 'number' && document.activeElement !== rateInput) rateInput.value = String(msg.failure_rate);
    seeded = true;
    showStatus(`load: ${num(msg.jobs).toLocaleString('en-US')} jobs, ${num(msg.failure_rate)} % failures`);
  });

  App.on('error', (msg) => showStatus(String(msg.message || 'error'), true));

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const msg = { type: 'load' };
    const jt = jobsInput.value.trim().replace(/[_,\s]/g, '');
    if (jt !== '') {
      if (!/^\d+$/.test(jt)) return showStatus('jobs: a whole number ≥ 0, please', true);
      msg.jobs = Number(jt);
    }
    const rt = rateInput.value.trim().replace(/\s*%$/, '');
    if (rt !== '') {
      const r = Number(rt);
      if (!Number.isFinite(r) || r < 0 || r > 100) return showStatus('failure rate: 0 to 100 %, please', true);
      msg.failure_rate = r;
    }
    if (!App.send(msg)) showStatus('not connected', true);
  });

  $('reset').addEventListener('click', () => {
    if (!App.send({ type: 'reset' })) return showStatus('not connected', true);
    clearSeries();
    latest = null;
    jobsInput.value = '0';
    rateInput.value = '0';
    redraw();
  });

  App.subscribe('metrics');
  window.addEventListener('resize', redraw);
  redraw();
})();
