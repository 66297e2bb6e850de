// A scrolling 30-second timeline: user speech, responses and assistant audio, with both levels.

const WINDOW_MS = 30000;
const LANES = [
  { key: 'user', label: 'You', color: '--user' },
  { key: 'response', label: 'Model', color: '--warn' },
  { key: 'audio', label: 'Audio', color: '--assistant' },
];
const LABEL_W = 54;

export class Timeline {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.spans = { user: [], response: [], audio: [] };
    this.open = { user: new Map(), response: new Map(), audio: new Map() };
    this.marks = [];
    this.levels = { user: [], audio: [] };
    this.running = false;
    this.colors = null;
    this.colorsAt = 0;
    new ResizeObserver(() => this.draw()).observe(canvas);
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => { this.colors = null; this.draw(); });
  }

  /** Start (or stop) redrawing ~20 times a second; when stopped the picture freezes. */
  run(on) {
    if (on === this.running) return;
    this.running = on;
    if (on) {
      const loop = () => {
        if (!this.running) return;
        this.draw();
        this.timer = setTimeout(() => requestAnimationFrame(loop), 50);
      };
      loop();
    } else {
      clearTimeout(this.timer);
      this.draw();
    }
  }

  clear() {
    for (const lane of Object.keys(this.spans)) { this.spans[lane] = []; this.open[lane].clear(); }
    this.marks = [];
    this.levels = { user: [], audio: [] };
    this.frozenAt = null;
    this.draw();
  }

  begin(lane, key, t = performance.now()) {
    if (!this.open[lane].has(key)) this.open[lane].set(key, { start: t, end: null });
  }

  end(lane, key, t = performance.now()) {
    const span = this.open[lane].get(key);
    if (!span) return;
    span.end = t;
    this.open[lane].delete(key);
    this.spans[lane] = this.spans[lane].filter((s) => s.end >= t - WINDOW_MS);
    this.spans[lane].push(span);
  }

  /** End every open span of a lane (a call that ends mid-turn). */
  endAll(t = performance.now()) {
    for (const lane of Object.keys(this.open)) for (const key of [...this.open[lane].keys()]) this.end(lane, key, t);
  }

  mark(lane, kind, t = performance.now()) {
    this.marks = this.marks.filter((m) => m.t >= t - WINDOW_MS);
    this.marks.push({ lane, kind, t });
  }

  level(lane, rms, t = performance.now()) {
    const series = this.levels[lane];
    series.push([t, rms]);
    while (series.length && series[0][0] < t - WINDOW_MS - 1000) series.shift();
  }

  freeze(t = performance.now()) {
    this.frozenAt = t;
    this.run(false);
  }

  thaw() {
    this.frozenAt = null;
  }

  _colors() {
    const t = performance.now();
    if (!this.colors || t - this.colorsAt > 1000) {
      const style = getComputedStyle(document.documentElement);
      const get = (name) => style.getPropertyValue(name).trim();
      this.colors = { grid: get('--border'), text: get('--faint'), err: get('--err'), warn: get('--warn'), lane: get('--panel-3') };
      for (const lane of LANES) this.colors[lane.key] = get(lane.color);
      this.colorsAt = t;
    }
    return this.colors;
  }

  draw() {
    const { canvas, ctx } = this;
    const dpr = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const c = this._colors();
    const nowT = this.frozenAt ?? performance.now();
    const plotW = width - LABEL_W - 8;
    const x = (t) => LABEL_W + plotW - ((nowT - t) / WINDOW_MS) * plotW;
    const laneH = (height - 14) / LANES.length;
    const top = 4;

    ctx.font = '10px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    // grid every 5 s, labelled at the bottom
    ctx.strokeStyle = c.grid;
    ctx.fillStyle = c.text;
    ctx.lineWidth = 1;
    for (let s = 0; s <= WINDOW_MS / 1000; s += 5) {
      const gx = Math.round(LABEL_W + plotW - (s * 1000 / WINDOW_MS) * plotW) + 0.5;
      ctx.beginPath();
      ctx.moveTo(gx, top);
      ctx.lineTo(gx, height - 12);
      ctx.stroke();
      ctx.textAlign = 'center';
      if (s > 0 && s < WINDOW_MS / 1000) ctx.fillText(`-${s}s`, gx, height - 5);
    }
    ctx.textAlign = 'center';
    ctx.fillText('now', LABEL_W + plotW - 8, height - 5);

    LANES.forEach((lane, i) => {
      const y = top + i * laneH;
      const midY = y + laneH / 2;
      ctx.fillStyle = c.text;
      ctx.textAlign = 'left';
      ctx.fillText(lane.label, 10, midY);
      ctx.fillStyle = c.lane;
      ctx.fillRect(LABEL_W, midY - 0.5, plotW, 1);
      const color = c[lane.key];
      const spans = [...this.spans[lane.key], ...[...this.open[lane.key].values()].map((s) => ({ start: s.start, end: nowT }))];
      ctx.fillStyle = color;
      ctx.globalAlpha = 0.28;
      for (const s of spans) {
        if (s.end < nowT - WINDOW_MS) continue;
        const x0 = Math.max(LABEL_W, x(s.start));
        const x1 = Math.max(x0 + 2, x(s.end));
        ctx.beginPath();
        ctx.roundRect(x0, y + 3, x1 - x0, laneH - 6, 3);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
      const series = this.levels[lane.key];
      if (series?.length) {
        ctx.strokeStyle = color;
        ctx.lineWidth = 1.25;
        ctx.beginPath();
        let started = false;
        for (const [t, rms] of series) {
          if (t < nowT - WINDOW_MS) continue;
          const db = rms > 0 ? 20 * Math.log10(rms) : -90;
          const amp = Math.min(1, Math.max(0, (db + 60) / 60)) * (laneH / 2 - 3);
          const px = x(t);
          if (!started) { ctx.moveTo(px, midY - amp); started = true; } else ctx.lineTo(px, midY - amp);
        }
        ctx.stroke();
      }
    });

    for (const m of this.marks) {
      if (m.t < nowT - WINDOW_MS) continue;
      const i = LANES.findIndex((l) => l.key === m.lane);
      const y = top + i * laneH;
      const mx = Math.round(x(m.t)) + 0.5;
      ctx.strokeStyle = m.kind === 'cleared' ? c.err : c.warn;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(mx, y + 1);
      ctx.lineTo(mx, y + laneH - 1);
      ctx.stroke();
    }
    ctx.lineWidth = 1;
  }
}
