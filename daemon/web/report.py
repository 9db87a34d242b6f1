"""An incident report as one self-contained HTML file: text rendered here, plots by uPlot.

Everything is inline (uPlot and its licence, the report's script and style, the evidence as
JSON), so the file works offline and can be attached to a work order. The plot shows every
signal of the evidence window, the anomaly span shaded, the leading signal in red and first,
and each signal's baseline band: the agent's normal mean at the raise, plus and minus three
standard deviations of the samples before the span.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata

import msgspec
import numpy as np

from edge_agent.core.readings import Quality
from edge_agent.daemon.retention.evidence import Evidence
from edge_agent.daemon.web.journal import Incident

BAND_SIGMAS = 3.0


def _static(name: str) -> str:
    from edge_agent.daemon.web.page import static_file  # noqa: PLC0415 - page imports us

    return static_file(name).decode("utf-8")


def _iso(ts: object) -> str:
    if not isinstance(ts, int | float) or not math.isfinite(ts):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e("-" if value is None else value)
    return f"{value:.4g}"


def _version() -> str:
    try:
        return metadata.version("edge-agent")
    except metadata.PackageNotFoundError:
        return "unknown"


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[dict[str, object]]:
    return [_dict(x) for x in value] if isinstance(value, list) else []


def _first_raise(incident: Incident | None) -> dict[str, object]:
    if incident is None or not incident.events:
        return {}
    return _dict(incident.events[0].get("rec"))


def _span(ev: Evidence, incident: Incident | None) -> tuple[float, float] | None:
    if incident is None:
        return None
    end = incident.closed if incident.closed is not None else ev.end
    return incident.onset, min(max(end, incident.onset), ev.end)


def _series(
    ev: Evidence, incident: Incident | None, span: tuple[float, float] | None
) -> list[dict[str, object]]:
    rec = _first_raise(incident)
    ranked = [str(s.get("signal")) for s in _dicts(rec.get("signals"))]
    leading = ranked[0] if ranked else None
    order = sorted(ev.signals, key=lambda s: (ranked.index(s) if s in ranked else len(ranked), s))
    baselines = incident.baselines if incident is not None else {}
    out = []
    for name in order:
        s = ev.signals[name]
        good = s.quality == Quality.GOOD
        values = np.where(good, s.values, np.nan)
        before = values[(s.ts < span[0]) & good] if span is not None else values[good]
        band = None
        if before.size >= 2:
            centre, half = float(np.mean(before)), BAND_SIGMAS * float(np.std(before))
            band = [centre - half, centre + half]
        out.append(
            {
                "name": name,
                "leading": name == leading,
                "ts": s.ts.tolist(),
                "value": [None if math.isnan(v) else v for v in values.tolist()],
                "baseline": baselines.get(name),
                "band": band,
            }
        )
    return out


def _table(rows: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{cells}</table>"


def _advice(rec: Mapping[str, object], incident: Incident | None) -> str:
    if not rec:
        return "<p>No recommendation is on record for this evidence (the journal has no entry).</p>"
    latest = _dict(incident.events[-1].get("rec")) if incident and incident.events else rec
    raised = [e for e in (incident.events if incident else []) if e.get("kind") != "resolved"]
    advice = _dict(_dict(raised[-1].get("rec")).get("action")) if raised else {}
    due = advice.get("due_within_h")
    cause = _dict(rec.get("cause"))
    cands = ", ".join(
        f"{_e(c.get('class'))} {_num(c.get('probability'))}" for c in _dicts(rec.get("candidates"))
    )
    parts = [
        f"<p class='action'>{_e(advice.get('text', '-'))}"
        + (f" <span class='due'>(within {_num(due)} h)</span>" if due else "")
        + "</p>",
        f"<p>{_e(rec.get('explanation', ''))}</p>",
        (
            f"<p>Cause: <b>{_e(cause.get('class', 'unclassified'))}</b>, probability "
            f"{_num(cause.get('probability'))}. Candidates: {cands or '-'}.</p>"
        ),
    ]
    if latest.get("kind") == "resolved":
        parts.append(f"<p class='resolved'>Resolved: {_e(latest.get('explanation', ''))}</p>")
    return "".join(parts)


def _rule(rec: Mapping[str, object]) -> str:
    model, pack, anomaly = _dict(rec.get("model")), _dict(rec.get("rule_pack")), {}
    anomaly = _dict(rec.get("anomaly"))
    rows = [
        ("rule", _e(rec.get("rule_id", "-"))),
        ("rule pack", f"{_e(pack.get('name', '-'))} v{_e(pack.get('version', '-'))}"),
        ("model", f"{_e(model.get('name', '-'))} v{_e(model.get('version', '-'))}"),
        ("score / threshold", f"{_num(anomaly.get('score'))} / {_num(anomaly.get('threshold'))}"),
    ]
    rows += [(f"input {k}", _e(_json(v))) for k, v in _dict(rec.get("evidence")).items()]
    head = "<tr><th>signal</th><th>direction</th><th>contribution</th><th>change %</th>"
    head += "<th>mean</th><th>baseline</th></tr>"
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{_e(s.get(k)) if k in {'signal', 'direction'} else _num(s.get(k))}</td>"
            for k in ("signal", "direction", "contribution", "change_pct", "mean", "baseline")
        )
        + "</tr>"
        for s in _dicts(rec.get("signals"))
    )
    return _table(rows) + f"<h3>Leading signals</h3><table class='grid'>{head}{body}</table>"


def _json(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _timeline(incident: Incident | None) -> str:
    if incident is None:
        return "<p>No timeline on record.</p>"
    rows = "".join(
        f"<tr class='ev-{_e(e.get('kind'))}'><td>{_iso(e.get('ts'))}</td><td>{_e(e.get('kind'))}"
        f"</td><td>{_e(_dict(e.get('rec')).get('severity', ''))}</td><td>{_e(e.get('why'))}</td>"
        f"<td class='id'>{_e(_dict(e.get('rec')).get('id', ''))}</td></tr>"
        for e in incident.events
    )
    head = "<tr><th>event time</th><th>event</th><th>severity</th><th>why</th><th>id</th></tr>"
    return f"<table class='grid' id='timeline-table'>{head}{rows}</table>"


def _script_json(value: object) -> str:
    # Inside <script>, "</" would end the element; JSON allows "\/" for "/".
    return msgspec.json.encode(value).decode().replace("</", "<\\/")


def render_report(ev: Evidence, incident: Incident | None, gateway: str) -> bytes:
    """The report of one evidence record as a complete HTML document."""
    rec = _first_raise(incident)
    span = _span(ev, incident)
    data = {
        "asset": ev.asset,
        "start": ev.start,
        "end": ev.end,
        "raised": ev.ts,
        "span": list(span) if span else None,
        "signals": _series(ev, incident, span),
    }
    title = incident.title if incident else f"evidence {ev.id} of {ev.asset}"
    status = incident.status if incident else "-"
    meta = [
        ("asset", _e(ev.asset)),
        ("gateway", _e(gateway or "-")),
        ("status", f"<span class='status status-{_e(status)}'>{_e(status)}</span>"),
        ("severity", _e(incident.severity if incident else "-")),
        ("incident", f"<span class='id'>{_e(incident.id if incident else '-')}</span>"),
        ("evidence", f"<span class='id'>{_e(ev.id)}</span>"),
        ("window", f"{_iso(ev.start)} to {_iso(ev.end)}" + ("" if ev.complete else " (cut)")),
    ]
    legend = (
        "Shaded: the anomaly span (first anomalous window to resolution or the record's end). "
        f"Green band: mean ± {BAND_SIGMAS:g} standard deviations of the samples before the span; "
        "dashed green: the agent's baseline at the raise. Red: the leading signal. "
        "Dashed red line: the raise."
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}: edge-agent incident report</title>
<style>{_static("uPlot.min.css")}
{_static("report.css")}</style></head>
<body>
<header><h1>{_e(title)}</h1>{_table(meta)}</header>
<section id="advice"><h2>Advice</h2>{_advice(rec, incident)}</section>
<section id="evidence"><h2>Evidence window</h2><p class="legend">{_e(legend)}</p>
<div id="charts" data-span-start="{span[0] if span else ""}"
 data-span-end="{span[1] if span else ""}"></div>
<noscript>The plots need JavaScript; the samples are in the report-data element.</noscript>
</section>
<section id="rule"><h2>Rule and its inputs</h2>{_rule(rec)}</section>
<section id="timeline"><h2>Timeline</h2>{_timeline(incident)}</section>
<footer>edge-agent {_e(_version())}, report made {_iso(datetime.now(UTC).timestamp())}.
<details><summary>Plots by uPlot (MIT licence)</summary>
<pre>{_e(_static("uPlot.LICENSE"))}</pre></details></footer>
<script type="application/json" id="report-data">{_script_json(data)}</script>
<script>{_static("uPlot.iife.min.js")}</script>
<script>{_static("report.js")}</script>
</body></html>
"""
    return doc.encode("utf-8")


def render_missing(evidence_id: str, why: str, refresh_s: int | None = None) -> bytes:
    """A short page saying why there is no report (yet)."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f"<title>evidence {_e(evidence_id)}</title></head><body>"
        f"<h1>No report for evidence {_e(evidence_id)}</h1><p id='why'>{_e(why)}</p>"
        "</body></html>\n"
    ).encode()
