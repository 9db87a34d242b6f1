// The incident report's plots: one uPlot chart per signal, cursors in sync.
// Shaded: the anomaly span; band: baseline +- 3 sigma; red: the leading signal.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const host = document.getElementById("charts");
  const span = data.span;
  const width = Math.max(560, Math.min(1100, (host.clientWidth || 900) - 8));
  const sync = uPlot.sync("evidence");
  const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

  function shade(u) {
    const ctx = u.ctx;
    const { left, top, width: w, height: h } = u.bbox;
    const clamp = (x) => Math.min(left + w, Math.max(left, x));
    if (span) {
      const x0 = clamp(u.valToPos(span[0], "x", true));
      const x1 = clamp(u.valToPos(span[1], "x", true));
      ctx.save();
      ctx.fillStyle = "rgba(255, 140, 0, 0.20)";
      ctx.fillRect(x0, top, Math.max(1, x1 - x0), h);
      ctx.restore();
    }
    const xr = clamp(u.valToPos(data.raised, "x", true));
    ctx.save();
    ctx.strokeStyle = "rgba(120, 0, 0, 0.8)";
    ctx.setLineDash([5, 4]);
    ctx.beginPath();
    ctx.moveTo(xr, top);
    ctx.lineTo(xr, top + h);
    ctx.stroke();
    ctx.restore();
  }

  data.signals.forEach(function (sig) {
    const box = document.createElement("div");
    box.className = "chart" + (sig.leading ? " leading" : "");
    box.dataset.signal = sig.name;
    host.appendChild(box);
    const n = sig.ts.length;
    const fill = (v) => new Array(n).fill(v);
    const lo = sig.band ? fill(sig.band[0]) : fill(null);
    const hi = sig.band ? fill(sig.band[1]) : fill(null);
    const base = sig.baseline === null ? fill(null) : fill(sig.baseline);
    const opts = {
      title: sig.name + (sig.leading ? " (leading signal)" : ""),
      width: width,
      height: sig.leading ? 220 : 160,
      tzDate: utc,
      cursor: { sync: { key: sync.key } },
      legend: { show: false },
      scales: { x: { time: true, range: [data.start, data.end] } },
      series: [
        {},
        { label: sig.name, stroke: sig.leading ? "#d62728" : "#1f5fa8", width: sig.leading ? 2.5 : 1.5 },
        { label: "band low", stroke: "rgba(44,160,44,0.55)", width: 1 },
        { label: "band high", stroke: "rgba(44,160,44,0.55)", width: 1 },
        { label: "baseline", stroke: "#2ca02c", width: 1, dash: [6, 4] },
      ],
      bands: [{ series: [3, 2], fill: "rgba(44,160,44,0.12)" }],
      hooks: { drawClear: [shade] },
    };
    new uPlot(opts, [sig.ts, sig.value, lo, hi, base], box);
  });
  host.dataset.plotted = String(data.signals.length);
})();
