"""Rule state across a restart (issue 13, case 7), on the default pack and hand-built windows:
an advisor restarted mid-incident raises nothing again and resolves under the original id."""

from __future__ import annotations

import math
import os
from pathlib import Path

from edge_agent.core import metrics
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules.engine import Advisor, load_pack
from edge_agent.rules.pack import default_pack_path
from edge_agent.rules.state import RuleStore

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
CLASSES += ["stuck_sensor", "drifting_sensor", "unknown"]
BASE = {"temperature": 45.0, "vibration": 1.5, "current": 20.0, "pressure": 4.0, "flow": 50.0}
T0 = 1_800_000_000.0


def window(ts: float, *, hot: bool, baseline_known: bool = True) -> WindowResult:
    """A running pump, overheating (85 degC, the model sure) or back to normal."""
    means = {**BASE, "temperature": 85.0 if hot else 45.0}
    stats = {}
    for s in SIGNALS:
        m = means[s]
        b = BASE[s] if baseline_known else math.nan  # a fresh gate knows no baseline yet
        stats[s] = SignalStats(m, m, m * 0.95, m * 1.05, 0.0, b, 0.0)
    probs = dict.fromkeys(CLASSES, 0.0) | ({"overheating": 0.95} if hot else {"normal": 1.0})
    contrib = dict.fromkeys(SIGNALS, 0.0)
    return WindowResult("pump-7", ts, 3.0 if hot else 0.2, 1.0, contrib, probs, stats)


def advisor(state_dir: Path) -> Advisor:
    adv = Advisor(
        load_pack([default_pack_path()]),
        model_name="pump-fault",
        model_version="1",
        signals=SIGNALS,
        classes=CLASSES,
        gateway_id="gw",
    )
    adv.keep_state(RuleStore(state_dir))
    return adv


def test_restart_mid_incident_no_second_raise_resolved_names_the_raise(tmp_path: Path) -> None:
    first = advisor(tmp_path)
    recs = first.evaluate([window(T0 + 5 * i, hot=True) for i in range(6)])
    raised = [r for r in recs if r.kind == "raise"]
    assert len(raised) == 1, recs
    assert (tmp_path / "rules-state.sqlite").is_file()

    # The restart: a new advisor, a gate that has not learnt a baseline yet (NaN).
    second = advisor(tmp_path)
    later = second.evaluate(
        [window(T0 + 100 + 5 * i, hot=True, baseline_known=False) for i in range(20)]
    )
    assert not [r for r in later if r.kind == "raise"], later
    errors = metrics.RULE_ERRORS.labels("overheating")._value.get()
    cleared = second.evaluate(
        [window(T0 + 300 + 5 * i, hot=False, baseline_known=False) for i in range(14)]
    )
    resolved = [r for r in cleared if r.kind == "resolved"]
    assert len(resolved) == 1, cleared
    assert resolved[0].payload["resolves"] == raised[0].id
    # The clear condition read the raise's own baseline, not the fresh gate's NaN.
    assert metrics.RULE_ERRORS.labels("overheating")._value.get() == errors

    # Resolved and cooling down: a third start does not raise during the cooldown either.
    third = advisor(tmp_path)
    again = third.evaluate([window(T0 + 500 + 5 * i, hot=True) for i in range(6)])
    assert not [r for r in again if r.kind == "raise"], again


def test_an_unwritable_state_file_is_counted_and_the_advisor_runs_on(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    before = metrics.RULE_STATE_ERRORS.labels("write")._value.get()
    adv = advisor(blocker)  # <file>/rules-state.sqlite can never be written
    recs = adv.evaluate([window(T0 + 5 * i, hot=True) for i in range(6)])
    assert [r.kind for r in recs] == ["raise"]
    assert metrics.RULE_STATE_ERRORS.labels("write")._value.get() - before == 1


def test_a_damaged_state_file_is_counted_moved_aside_and_replaced(tmp_path: Path) -> None:
    (tmp_path / "rules-state.sqlite").write_text("{not a database" * 100)
    before = metrics.RULE_STATE_ERRORS.labels("read")._value.get()
    adv = advisor(tmp_path)
    assert metrics.RULE_STATE_ERRORS.labels("read")._value.get() - before == 1
    assert (tmp_path / "rules-state.sqlite.damaged").read_text().startswith("{not a database")
    recs = adv.evaluate([window(T0 + 5 * i, hot=True) for i in range(6)])
    assert [r.kind for r in recs] == ["raise"]
    # The new file holds the raise: a restart does not raise it again.
    again = advisor(tmp_path).evaluate([window(T0 + 100 + 5 * i, hot=True) for i in range(6)])
    assert not [r for r in again if r.kind == "raise"], again


def test_a_failed_write_is_retried_by_the_next_save(tmp_path: Path) -> None:
    """A write refused once (disk full, say) is not lost: the next save writes that asset too."""
    adv = advisor(tmp_path)
    db = tmp_path / "rules-state.sqlite"
    tmp_path.chmod(0o500)  # no new files (WAL, journal) in the directory: the write fails
    try:
        before = metrics.RULE_STATE_ERRORS.labels("write")._value.get()
        recs = adv.evaluate([window(T0 + 5 * i, hot=True) for i in range(6)])
        assert [r.kind for r in recs] == ["raise"]
        refused = metrics.RULE_STATE_ERRORS.labels("write")._value.get() - before
    finally:
        tmp_path.chmod(0o700)
    if refused == 0:  # root ignores the mode bits: make the write fail another way
        assert os.geteuid() == 0
        db.unlink(missing_ok=True)
        db.mkdir()  # the database path is a directory: cannot be opened
        adv2 = advisor(tmp_path)
        before = metrics.RULE_STATE_ERRORS.labels("write")._value.get()
        recs = adv2.evaluate([window(T0 + 5 * i, hot=True) for i in range(6)])
        assert [r.kind for r in recs] == ["raise"]
        assert metrics.RULE_STATE_ERRORS.labels("write")._value.get() - before == 1
        db.rmdir()
        adv = adv2
    # Another asset's window saves: the refused asset's raise is written with it.
    for i in range(6):
        adv.evaluate([window(T0 + 40 + 5 * i, hot=True)._replace(asset="pump-8")])
    later = advisor(tmp_path).evaluate([window(T0 + 100 + 5 * i, hot=True) for i in range(6)])
    assert not [r for r in later if r.kind == "raise"], later


def test_a_raise_before_any_baseline_resolves_without_condition_errors(tmp_path: Path) -> None:
    """Raised by a fresh gate (no baseline yet, NaN), the clear still decides (by its guard),
    before and after a restart: NaN reached CEL as a value no operation accepts."""
    adv = advisor(tmp_path)
    errors = metrics.RULE_ERRORS.labels("overheating")._value.get()
    raised = adv.evaluate([window(T0 + 5 * i, hot=True, baseline_known=False) for i in range(6)])
    assert [r.kind for r in raised] == ["raise"]
    restarted = advisor(tmp_path)
    cleared = restarted.evaluate(
        [window(T0 + 300 + 5 * i, hot=False, baseline_known=False) for i in range(14)]
    )
    resolved = [r for r in cleared if r.kind == "resolved"]
    assert len(resolved) == 1, cleared
    assert resolved[0].payload["resolves"] == raised[0].id
    assert metrics.RULE_ERRORS.labels("overheating")._value.get() == errors
