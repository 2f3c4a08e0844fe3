// A small hand-written canvas line chart plus the fixed-size data structures
// behind it (a ring of samples and a moving average). Exposed as `Chart`.
// Must not: grow with time (the rings are fixed-size) or touch the network.
'use strict';
(function () {
  // Fixed-capacity ring of (t, v) pairs; the oldest pair is overwritten.
  class Ring {
    constructor(capacity) {
      this.cap = capacity;
      this.t = new Float64Array(capacity);
      this.v = new Float64Array(capacity);
      this.start = 0;
      this.len = 0;
    }
    clear() { this.start = 0; this.len = 0; }
    push(t, v) {
      const i = (this.start + this.len) % this.cap;
      this.t[i] = t;
      this.v[i] = v;
      if (this.len < this.cap) this.len++;
      else this.start = (this.start + 1) % this.cap;
    }
    // k-th oldest sample, 0 <= k < len
    tAt(k) { return this.t[(this.start + k) % this.cap]; }
    vAt(k) { return this.v[(this.start + k) % this.cap]; }
    lastT() { return this.len ? this.tAt(this.len - 1) : NaN; }
    lastV() { return this.len ? this.vAt(this.len - 1) : NaN; }
  }

  // Average of the last `n` pushed values (fewer at the start).
  class MovingAverage {
    constructor(n) { this.buf = new Float64Array(n); this.n = n; this.i = 0; this.len = 0; }
    clear() { this.i = 0; this.len = 0; }
    push(v) {
      this.buf[this.i] = v;
      this.i = (this.i + 1) % this.n;
      if (this.len < this.n) this.len++;
      let sum = 0;
      for (let k = 0; k < this.len; k++) sum += this.buf[k];
      return sum / this.len;
    }
  }

  function trim1(x) {
    const s = x.toFixed(1);
    return s.endsWith('.0') ? s.slice(0, -2) : s;
  }
  // Axis labels: 0, 2.5k, 10k, 1.5M
  function short(n) {
    const a = Math.abs(n);
    if (a >= 1e6) return trim1(n / 1e6) + 'M';
    if (a >= 1e3) return trim1(n / 1e3) + 'k';
    return trim1(n);
  }
  // Latest values: 950, 10.0k, 1.50M
  function rate(n) {
    const a = Math.abs(n);
    if (a >= 1e6) return (n / 1e6).toFixed(2) + 'M';
    if (a >= 1e3) return (n / 1e3).toFixed(1) + 'k';
    return String(Math.round(n));
  }
  // Smallest of 1, 2, 2.5, 5 x 10^k that is >= v (and >= floor).
  function niceMax(v, floor) {
    v = Math.max(v, floor || 1);
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * 0.999999) return m * p;
    return 10 * p;
  }

  const PAD = { left: 64, right: 20, top: 16, bottom: 30 };

  // Draws the samples of `ring` from the last `windowMs` (ending at the newest
  // sample). opts: { max: fixed y max or undefined for auto, minMax: smallest
  // auto max, format: label formatter, color }.
  function draw(canvas, ring, opts) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    const bw = Math.max(1, Math.round(w * dpr));
    const bh = Math.max(1, Math.round(h * dpr));
    if (canvas.width !== bw || canvas.height !== bh) { canvas.width = bw; canvas.height = bh; }
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    const windowMs = opts.windowMs || 60000;
    const x0 = PAD.left, x1 = w - PAD.right, y0 = PAD.top, y1 = h - PAD.bottom;
    const tEnd = ring.len ? ring.lastT() : 0;
    const tStart = tEnd - windowMs;

    let max = opts.max;
    if (max === undefined) {
      let m = 0;
      for (let k = 0; k < ring.len; k++) if (ring.tAt(k) >= tStart) m = Math.max(m, ring.vAt(k));
      max = niceMax(m * 1.05, opts.minMax || 10);
    }
    const X = (t) => x0 + ((t - tStart) / windowMs) * (x1 - x0);
    const Y = (v) => y1 - (Math.min(Math.max(v, 0), max) / max) * (y1 - y0);

    const style = getComputedStyle(canvas);
    const fg = style.color || '#333';
    const font = `16px ${style.fontFamily || 'sans-serif'}`;
    ctx.font = font;
    ctx.lineWidth = 1;

    // grid + y labels
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const y = Math.round(Y(v)) + 0.5;
      ctx.strokeStyle = i === 0 ? fg : 'rgba(128,128,128,0.25)';
      ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
      ctx.fillStyle = fg;
      ctx.fillText(opts.format ? opts.format(v) : short(v), x0 - 8, y);
    }
    // x labels: seconds ago
    ctx.textBaseline = 'top';
    for (let s = 60; s >= 0; s -= 15) {
      const x = X(tEnd - s * 1000);
      ctx.textAlign = s === 0 ? 'right' : 'center'; // keep `now` inside the canvas
      ctx.fillText(s === 0 ? 'now' : `-${s}s`, s === 0 ? x1 : x, y1 + 8);
    }

    // thin lines first (e.g. one per scheduler), under the main series
    for (const line of opts.lines || []) {
      const r = line.ring;
      let k0 = -1;
      for (let k = 0; k < r.len; k++) if (r.tAt(k) >= tStart) { k0 = k; break; }
      if (k0 < 0) continue;
      ctx.beginPath();
      ctx.moveTo(X(r.tAt(k0)), Y(r.vAt(k0)));
      for (let k = k0 + 1; k < r.len; k++) ctx.lineTo(X(r.tAt(k)), Y(r.vAt(k)));
      ctx.strokeStyle = line.color || fg;
      ctx.lineWidth = 1;
      ctx.stroke();
    }

    // line + area
    let first = -1;
    for (let k = 0; k < ring.len; k++) if (ring.tAt(k) >= tStart) { first = k; break; }
    if (first < 0) return;
    const color = opts.color || '#2a6fdb';
    ctx.beginPath();
    ctx.moveTo(X(ring.tAt(first)), Y(ring.vAt(first)));
    for (let k = first + 1; k < ring.len; k++) ctx.lineTo(X(ring.tAt(k)), Y(ring.vAt(k)));
    ctx.strokeStyle = color;
    ctx.lineWidth = 2.5;
    ctx.lineJoin = 'round';
    ctx.stroke();
    ctx.lineTo(X(ring.tAt(ring.len - 1)), y1);
    ctx.lineTo(X(ring.tAt(first)), y1);
    ctx.closePath();
    ctx.globalAlpha = 0.12;
    ctx.fillStyle = color;
    ctx.fill();
    ctx.globalAlpha = 1;
  }

  window.Chart = { Ring, MovingAverage, draw, short, rate, niceMax };
})();
