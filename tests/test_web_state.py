"""The page's live state, its incident journal and its routes, with real records on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edge_agent.core.readings import Outgoing, Priority, Reading, SignalStats, WindowResult
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings
from edge_agent.daemon.web.journal import MAX_INCIDENTS, Journal
from edge_agent.daemon.web.observer import POINTS, LiveState
from edge_agent.daemon.web.page import WebApp
from edge_agent.rules.recommendation import SCHEMA_ID

T0 = 1_750_000_000.0
SIGNALS = ("temperature", "vibration")


def _result(asset: str, ts: float, score: float, threshold: float = 1.0) -> WindowResult:
    stats = {s: SignalStats(1.0, 1.0, 0.9, 1.1, 0.0, 1.0 + i, 0.0) for i, s in enumerate(SIGNALS)}
    return WindowResult(
        asset, ts, score, threshold, {"temperature": 0.2, "vibration": -score}, {}, stats
    )


def _rec(kind: str, asset: str, ts: float, rid: str, **extra: object) -> Outgoing:
    payload = {
        "schema": SCHEMA_ID,
        "id": rid,
        "kind": kind,
        "asset": asset,
        "window_ts": ts,
        "rule_id": "cavitation",
        "severity": extra.pop("severity", "warning"),
        "title": f"{kind} on {asset}",
        "explanation": f"why {kind}",
        "model": {"name": "m", "version": "1"},
        "rule_pack": {"name": "p", "version": "1"},
        **extra,
    }
    return Outgoing(f"x/recommendations/{asset}", msgspec.json.encode(payload), rid, asset)


def _snap(live: LiveState, since: float = 0.0) -> dict[str, Any]:
    """The snapshot as the page gets it (JSON)."""
    snap: dict[str, Any] = json.loads(msgspec.json.encode(live.snapshot(_serving, since)))
    return snap


def _rows(live: LiveState, since: float = 0.0) -> dict[str, dict[str, Any]]:
    return {r["asset"]: r for r in _snap(live, since)["assets"]}


def _serving(_asset: str) -> dict[str, object]:
    return {"model": {"name": "m", "version": "1"}, "rules": {"name": "p", "version": "1"}}


def test_rings_are_bounded_and_states_say_why() -> None:
    live = LiveState(window_s=30.0)
    for i in range(POINTS + 50):
        live.scored([_result("pump-1", T0 + 5 * i, 0.3), _result("pump-2", T0 + 5 * i, 0.4)])
    live.scored([_result("pump-2", T0 + 5 * (POINTS + 50), 2.0)])
    rows = _rows(live)
    assert len(rows["pump-1"]["ts"]) == POINTS  # the oldest points went
    assert rows["pump-1"]["ts"][0] == T0 + 5 * 50
    assert rows["pump-1"]["state"] == "normal"
    assert "below threshold" in rows["pump-1"]["why"]
    assert "above threshold" in rows["pump-2"]["why"]  # anomalous, but no rule raised
    since = _rows(live, since=T0 + 5 * (POINTS + 48))
    assert [len(r["ts"]) for r in since.values()] == [1, 2]


def test_an_incident_opens_updates_and_closes_with_why_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    live = LiveState(Journal(tmp_path), window_s=30.0)
    for i in range(20):  # normal, then anomalous from the 15th window on
        live.scored([_result("pump-3", T0 + 5 * i, 2.0 if i >= 15 else 0.2)])
    live.published([_rec("raise", "pump-3", T0 + 95, "r1", evidence_id="e1")])
    # A live update restarts the rules: the same fault raised again is the same incident.
    live.published([_rec("raise", "pump-3", T0 + 120, "r2", evidence_id="e2")])
    live.published(
        [_rec("raise", "pump-3", T0 + 125, "r3", escalated_from="warning", severity="critical")]
    )
    row = _rows(live)["pump-3"]
    assert (row["state"], row["incident"]) == ("raised", "r1")
    inc = live.incidents["r1"]
    assert inc.onset == T0 + 75 - 30  # first anomalous window, minus one window
    assert inc.evidence_ids == ["e1", "e2"]
    assert [e["kind"] for e in inc.events] == ["raised", "updated", "updated"]
    assert "raised again by model m v1" in str(inc.events[1]["why"])
    assert str(inc.events[2]["why"]) == "escalated from warning to critical"
    assert inc.baselines == {"temperature": 1.0, "vibration": 2.0}
    live.published([_rec("resolved", "pump-3", T0 + 300, "r4", resolves="r3")])
    assert (inc.status, inc.why_closed, inc.closed) == ("resolved", "why resolved", T0 + 300)
    live.scored([_result("pump-3", T0 + 305, 0.1)])
    assert _rows(live)["pump-3"]["state"] == "normal"
    # What a report needs outlives the process: the journal has it, by evidence id.
    again = Journal(tmp_path).find("e2")
    assert again is not None
    assert (again.id, again.status, len(again.events)) == ("r1", "resolved", 4)
    # An incident open at a stop is open after a restart, and its resolution closes it.
    live.published([_rec("raise", "pump-9", T0, "r9", evidence_id="e9")])
    again_live = LiveState(Journal(tmp_path))
    assert again_live.incidents["r9"].status == "open"
    assert again_live.incidents["r1"].status == "resolved"
    again_live.published([_rec("resolved", "pump-9", T0 + 60, "r10", resolves="r9")])
    assert again_live.incidents["r9"].status == "resolved"
    assert Journal(tmp_path).find("e9").status == "resolved"  # type: ignore[union-attr]


def test_journal_stays_bounded(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    live = LiveState(journal)
    for i in range(MAX_INCIDENTS + 40):
        live.published([_rec("raise", f"a{i}", T0 + i, f"r{i}", evidence_id=f"e{i}")])
    assert len(live.incidents) == MAX_INCIDENTS
    assert len(journal.load()) == MAX_INCIDENTS
    assert journal.find("e0") is not None  # still in the file until it is compacted


def test_non_recommendations_cost_no_decoding() -> None:
    live = LiveState()
    live.published([Outgoing("x/digest", b"not json", "d", priority=Priority.DIGEST)])
    live.published([Outgoing("x/recommendations/a", b"{broken", "b")])
    assert _snap(live)["recommendations"] == []


def _retention(tmp_path: Path) -> Retention:
    settings = RetentionSettings(evidence_pre_s=10.0, evidence_post_s=10.0)
    return Retention(settings, tmp_path, gateway="gw")


def _feed(retention: Retention, start: float, n: int) -> None:
    retention.ingest(
        [
            Reading("pump-3", s, start + t, float(np.sin(t / 5.0) + 10 * (t > n // 2)))
            for t in range(n)
            for s in SIGNALS
        ]
    )


def test_routes_serve_the_page_state_and_reports(tmp_path: Path) -> None:
    retention = _retention(tmp_path)
    journal = Journal(tmp_path)
    live = LiveState(journal, window_s=5.0)
    app = WebApp(
        live,
        serving=_serving,
        facts=lambda: {"gateway": "gw", "health": {}},
        evidence=retention.get,
        journal=journal,
        learning=lambda: {"pump-7": "recording 40%"},
    )
    _feed(retention, T0, 30)
    evidence_id = retention.trigger("pump-3", T0 + 20, "cavitation")
    live.scored([_result("pump-3", T0 + 20, 2.0)])
    live.published([_rec("raise", "pump-3", T0 + 20, "r1", evidence_id=evidence_id)])

    pending = app("/report/" + evidence_id, "")
    assert pending is not None
    assert pending.code == 200
    assert b"still recording" in pending.body
    assert b'http-equiv="refresh"' in pending.body
    _feed(retention, T0 + 30, 10)  # event time passes ts + post: the record freezes
    report = app("/report/" + evidence_id, "download=1")
    assert report is not None
    assert report.code == 200
    assert (
        "Content-Disposition",
        f'attachment; filename="report-{evidence_id}.html"',
    ) in report.headers
    assert b"raise on pump-3" in report.body
    assert app("/report/nope", "").code == 404  # type: ignore[union-attr]
    assert app("/report/../../etc/passwd", "").code == 404  # type: ignore[union-attr]

    state = app("/api/state", "since=abc")
    assert state is not None
    body = json.loads(state.body)
    rows = {r["asset"]: r for r in body["assets"]}
    assert rows["pump-3"]["state"] == "raised"
    assert rows["pump-7"] == {
        "asset": "pump-7",
        "state": "learning",
        "why": "recording 40%",
        **_serving("pump-7"),
        "incident": None,
    }
    assert body["gateway"] == "gw"
    assert body["incidents"][0]["evidence_ids"] == [evidence_id]
    index = app("/", "")
    assert index is not None
    assert b"static/page.js" in index.body
    assert app("/static/uPlot.iife.min.js", "").ctype.startswith("text/javascript")  # type: ignore[union-attr]
    assert app("/static/../observer.py", "") is None
    assert app("/static/.hidden.js", "") is None
    assert app("/elsewhere", "") is None


def test_a_report_of_an_unknown_or_expired_record_says_why(tmp_path: Path) -> None:
    retention = _retention(tmp_path)
    app = WebApp(
        LiveState(),
        serving=_serving,
        facts=dict,
        evidence=retention.get,
    )
    answer = app("/report/01234567-aaaa", "")
    assert answer is not None
    assert answer.code == 404
    assert b"unknown" in answer.body
