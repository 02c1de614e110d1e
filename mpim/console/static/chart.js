"use strict";
// A small line chart on a canvas: two series over a sliding time window, each with its own y axis
// from 0 (left and right) in four round steps, a legend.
// Points are [time in seconds, value of series 0, value of series 1].
class MpimChart {
  constructor(canvas, series, span) {
    this.canvas = canvas;
    this.series = series; // [{name, color}]
    this.span = span || 300;
    this.points = [];
  }

  setPoints(points) {
    this.points = points.slice(-this.span);
    this.draw();
  }

  add(point) {
    this.points.push(point);
    if (this.points.length > this.span) this.points.shift();
    this.draw();
  }

  static step(max) {
    // a round grid step giving about four lines up to max
    const raw = max / 4;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (raw <= m * power) return m * power;
    }
    return 10 * power;
  }

  static label(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(value % 1e6 ? 1 : 0) + "M";
    if (value >= 1e3) return (value / 1e3).toFixed(value % 1e3 ? 1 : 0) + "k";
    return String(Math.round(value * 10) / 10);
  }

  scale(index) {
    // the top of one series' axis: a round number above its largest visible value
    let max = 0;
    for (const p of this.points) max = Math.max(max, p[index + 1]);
    const step = MpimChart.step(max > 0 ? max * 1.05 : 4);
    return { step, top: 4 * step }; // four grid steps, each a round number
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 52, right = 52, top = 26, bottom = 24;
    const plotW = Math.max(10, width - left - right), plotH = Math.max(10, height - top - bottom);
    const now = this.points.length ? this.points[this.points.length - 1][0] : Date.now() / 1000;
    const start = now - this.span;
    const x = (t) => left + ((t - start) / this.span) * plotW;
    // each series has its own axis (the first on the left, the second on the right): pushes in
    // and deliveries out differ by the fan-out factor, often a thousand times
    const scales = this.series.map((_, i) => this.scale(i));
    const y = (v, i) => top + plotH - (v / scales[i].top) * plotH;

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.textBaseline = "middle";
    const lines = 4;
    for (let k = 0; k <= lines; k++) {
      const py = Math.round(top + plotH - (k / lines) * plotH) + 0.5;
      ctx.strokeStyle = "#e3e7ee";
      ctx.beginPath();
      ctx.moveTo(left, py);
      ctx.lineTo(left + plotW, py);
      ctx.stroke();
      this.series.forEach((s, i) => {
        if (i > 1) return;
        ctx.fillStyle = s.color;
        ctx.textAlign = i === 0 ? "right" : "left";
        ctx.fillText(MpimChart.label((scales[i].top * k) / lines), i === 0 ? left - 6 : left + plotW + 6, py);
      });
    }
    ctx.fillStyle = "#6b7385";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let ago = this.span; ago >= 0; ago -= 60) {
      ctx.fillText(ago ? `-${ago / 60}m` : "now", x(now - ago), top + plotH + 6);
    }

    this.series.forEach((s, i) => {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      let started = false;
      for (const p of this.points) {
        if (p[0] < start) continue;
        const px = x(p[0]), py = y(p[i + 1], i);
        if (started) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        started = true;
      }
      ctx.stroke();
    });

    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    let lx = left;
    this.series.forEach((s, i) => {
      const name = s.name + (i === 0 ? " (left axis)" : i === 1 ? " (right axis)" : "");
      ctx.fillStyle = s.color;
      ctx.fillRect(lx, 8, 12, 4);
      ctx.fillStyle = "#1d2330";
      ctx.fillText(name, lx + 16, 10);
      lx += 28 + ctx.measureText(name).width;
    });
  }
}
