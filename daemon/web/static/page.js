// The agent's page: polls api/state once a second and updates the tables in place.
// No framework and no build step; uPlot draws each asset's score against its threshold.
(function () {
  "use strict";
  const POLL_MS = 1000;
  const HOUR = 3600;
  const series = {}; // asset -> {ts, score, threshold}
  const charts = {}; // asset -> uPlot
  let since = 0;
  let polls = 0;

  const $ = (sel) => document.querySelector(sel);
  const esc = (s) => String(s === null || s === undefined ? "" : s)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const time = (ts) => (typeof ts === "number" ? new Date(ts * 1e3).toISOString().slice(0, 19).replace("T", " ") : "-");
  const num = (v) => (typeof v === "number" ? v.toPrecision(3) : "-");
  const cls = (s) => "state-" + String(s).replace(/ /g, "-");
  const reportLink = (id) => `<a class="report id" href="report/${encodeURIComponent(id)}">${esc(id.slice(-8))}</a>`;

  function merge(row) {
    const s = series[row.asset] || (series[row.asset] = { ts: [], score: [], threshold: [] });
    const ts = row.ts || [];
    for (let i = 0; i < ts.length; i++) {
      const last = s.ts.length ? s.ts[s.ts.length - 1] : -Infinity;
      if (ts[i] <= last) continue;
      s.ts.push(ts[i]); s.score.push(row.score[i]); s.threshold.push(row.threshold[i]);
      since = Math.max(since, ts[i]);
    }
    const newest = s.ts.length ? s.ts[s.ts.length - 1] : 0;
    let cut = 0;
    while (cut < s.ts.length && s.ts[cut] < newest - HOUR) cut++;
    if (cut) { s.ts.splice(0, cut); s.score.splice(0, cut); s.threshold.splice(0, cut); }
    return s;
  }

  function chart(asset, cell, s) {
    const data = [s.ts, s.score, s.threshold];
    if (charts[asset]) { charts[asset].setData(data); return; }
    charts[asset] = new uPlot({
      width: 320, height: 70, legend: { show: false }, cursor: { show: false },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      axes: [{ show: false }, { size: 40, font: "10px system-ui", ticks: { show: false } }],
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi, 1e-6) * 1.1] } },
      series: [{}, { stroke: "#1e6bb8", width: 1.5 }, { stroke: "#d32f2f", width: 1, dash: [4, 3] }],
    }, data, cell);
  }

  function contrib(c) {
    const entries = Object.entries(c || {});
    if (!entries.length) return "";
    const max = Math.max(1e-9, ...entries.map(([, v]) => Math.abs(v)));
    return `<div class="contrib">` + entries.map(([k, v]) => {
      const w = (Math.abs(v) / max) * 50;
      const dir = v >= 0 ? "up" : "down";
      return `<span>${esc(k)}</span><span class="bar"><i class="${dir}" style="width:${w}%"></i></span>` +
        `<span>${v >= 0 ? "+" : ""}${v.toFixed(2)}</span>`;
    }).join("") + `</div>`;
  }

  function assets(rows) {
    const body = $("#assets tbody");
    rows.forEach((row) => {
      let tr = body.querySelector(`tr[data-asset="${CSS.escape(row.asset)}"]`);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.asset = row.asset;
        tr.innerHTML = `<td class="asset"></td><td class="st"></td><td class="spark"></td>` +
          `<td class="cb"></td><td class="inc"></td><td class="ver small"></td>`;
        body.appendChild(tr);
      }
      tr.dataset.state = row.state;
      tr.querySelector(".asset").textContent = row.asset;
      tr.querySelector(".st").innerHTML = `<span class="state ${cls(row.state)}">${esc(row.state)}</span>` +
        `<div class="why">${esc(row.why)}</div>` +
        (row.last_score !== undefined ? `<div class="small">score ${num(row.last_score)} / threshold ${num(row.last_threshold)}</div>` : "");
      chart(row.asset, tr.querySelector(".spark"), merge(row));
      tr.querySelector(".cb").innerHTML = contrib(row.contrib);
      tr.querySelector(".inc").innerHTML = row.incident ? `<span class="id">${esc(row.incident.slice(-8))}</span>` : "";
      const m = row.model || {}, r = row.rules || {};
      tr.querySelector(".ver").textContent = `${m.name || "?"} v${m.version || "?"} / ${r.name || "?"} v${r.version || "?"}`;
    });
  }

  function incidents(list) {
    $("#incidents tbody").innerHTML = list.map((i) =>
      `<tr data-incident="${esc(i.id)}" data-status="${esc(i.status)}"><td>${time(i.opened)}</td><td>${esc(i.asset)}</td>` +
      `<td>${esc(i.title)}<div class="id">${esc(i.id)}</div></td>` +
      `<td class="status-${esc(i.status)}">${esc(i.status)}${i.why_closed ? `<div class="why">${esc(i.why_closed)}</div>` : ""}</td>` +
      `<td class="small">${i.events.map((e) => `${time(e.ts).slice(11)} ${esc(e.kind)}: ${esc(e.why)}`).join("<br>")}</td>` +
      `<td>${i.evidence_ids.map(reportLink).join(" ")}</td></tr>`).join("");
  }

  function recs(list) {
    $("#recs tbody").innerHTML = list.map((r) =>
      `<tr data-rec="${esc(r.id)}" data-kind="${esc(r.kind)}"><td>${time(r.window_ts)}</td><td>${esc(r.kind)}</td>` +
      `<td>${esc(r.asset)}</td><td>${esc(r.severity)}</td><td>${esc(r.title)}</td>` +
      `<td>${r.evidence_id ? reportLink(r.evidence_id) : ""}</td></tr>`).join("");
  }

  function health(state) {
    const h = state.health || {};
    $("#gateway").textContent = state.gateway ? "on " + state.gateway : "";
    const pills = Object.entries(h.connected || {}).map(([k, up]) =>
      `<span class="${up ? "up" : "down"}">${esc(k)} ${up ? "up" : "down"}</span>`);
    pills.push(`<span class="${h.outbox_store === "disk" ? "" : "bad"}">outbox ${esc(h.outbox_depth)} (${esc(h.outbox_store)})</span>`);
    pills.push(`<span>backend ${esc(h.backend)}</span>`);
    pills.push(`<span>bundle ${esc(state.bundle)}</span>`);
    if (typeof h.last_reading_age_s === "number") pills.push(`<span>last reading ${h.last_reading_age_s.toFixed(1)} s ago</span>`);
    if (h.degraded) pills.push(`<span class="bad">DEGRADED</span>`);
    $("#health").innerHTML = pills.join("");
  }

  async function poll() {
    try {
      const res = await fetch(`api/state?since=${since}`, { cache: "no-store" });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const state = await res.json();
      health(state);
      assets(state.assets);
      incidents(state.incidents);
      recs(state.recommendations);
      $("#banner").hidden = true;
      polls += 1;
      document.body.dataset.polls = String(polls);
      $("#updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
    } catch (err) {
      const b = $("#banner");
      b.hidden = false;
      b.textContent = "No answer from the agent (" + err.message + "); retrying.";
    }
    setTimeout(poll, POLL_MS);
  }
  poll();
})();
