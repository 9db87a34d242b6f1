"""The advisor on hand-built windows: debounce, one message per fault, resolve, cooldown,
escalation, inhibition, needs_review and the recommendation schema. The engine is pure, so
numbers made up here are enough. The mechanics run on a small pack written here (UNIT) so
that tuning the default pack does not move them; the default pack on real simulator traces
is test_rules_scenarios.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import jsonschema
import pytest

from edge_agent.core import metrics
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules.engine import Advisor, Recommendation, load_pack
from edge_agent.rules.pack import PackError, default_pack_path
from edge_agent.rules.recommendation import recommendation_schema
from edge_agent.rules.settings import AssetMeta

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = [
    "normal",
    "bearing_wear",
    "cavitation",
    "misalignment",
    "overheating",
    "stuck_sensor",
    "drifting_sensor",
    "unknown",
]
BASE = {"temperature": 45.0, "vibration": 1.5, "current": 20.0, "pressure": 4.0, "flow": 50.0}
T0 = 1_800_000_000.0
VALIDATOR = jsonschema.Draft202012Validator(recommendation_schema())


def window(
    ts: float,
    *,
    asset: str = "pump-3",
    score: float = 0.4,
    probs: dict[str, float] | None = None,
    means: dict[str, float] | None = None,
) -> WindowResult:
    """One window: every signal at its baseline unless `means` says otherwise."""
    means = {**BASE, **(means or {})}
    stats = {}
    contrib = {}
    for s in SIGNALS:
        m, b = means[s], BASE[s]
        stats[s] = SignalStats(m, m, m * 0.95, m * 1.05, 0.0, b, (m - b) / b * 100.0)
        contrib[s] = (m - b) / b
    p = dict.fromkeys(CLASSES, 0.0)
    p.update(probs or {"normal": 1.0})
    return WindowResult(asset, ts, score, 1.0, contrib, p, stats)


def bearing(ts: float, vib: float = 4.2, p: float = 0.9, **kw: object) -> WindowResult:
    return window(
        ts,
        score=3.0,
        probs={"bearing_wear": p, "normal": 1 - p},
        means={"vibration": vib, "temperature": 48.0},
        **kw,  # type: ignore[arg-type]
    )


UNIT = """\
pack: unit
version: 0.1.0
bands:
  vib_zone: {of: stats.vibration.mean, edges: [1.4, 2.8, 4.5], labels: [A, B, C, D]}
flags:
  running: stats.current.mean >= 3.0
defaults: {debounce: {n: 3, m: 4}, clear_debounce: {n: 12, m: 12}, cooldown_h: 4}
needs_review:
  when: anomalous && top_prob < 0.5
  debounce: {n: 4, m: 6}
  clear_windows: 12
  cooldown_h: 2
  title: "unexplained anomaly on {asset}"
  explanation: "led by {lead.signal} ({lead.direction}, {lead.change_pct:+.0f}% against baseline)"
  advice: "review within {due}"
  due_within_h: 24
rules:
  - id: bearing-wear
    fault: bearing_wear
    severity: warning
    raise: flag.running && probs.bearing_wear >= 0.5 && stats.vibration.change_pct >= 25.0
    clear: probs.bearing_wear < 0.2 && stats.vibration.change_pct < 10.0
    escalate: [{when: band.vib_zone == "D", severity: critical, due_within_h: 24}]
    title: "bearing wear likely on {asset}"
    explanation: >-
      vibration RMS {stats.vibration.change_pct:+.0f}% against baseline at
      {stats.vibration.mean:.1f} mm/s (zone {band.vib_zone})
    advice: "schedule lubrication and a bearing inspection within {due}"
    due_within_h: 168
    evidence: [stats.vibration.mean, band.vib_zone, flag.running]
  - id: misalignment
    fault: misalignment
    severity: warning
    raise: probs.misalignment >= 0.5
    clear: probs.misalignment < 0.2
    inhibited_by: [bearing-wear]
    title: "misalignment on {asset}"
    explanation: "{fault} at {prob:.0%}"
    advice: "align within {due}"
    due_within_h: 336
"""
_DIR = tempfile.TemporaryDirectory(prefix="edge-rules-test-")


@cache
def unit_pack() -> Path:
    path = Path(_DIR.name) / "unit.yaml"
    path.write_text(UNIT)
    return path


def advisor(paths: Iterable[Path] = (), **kw: object) -> Advisor:
    return Advisor(
        load_pack(list(paths) or [unit_pack()]),
        model_name="pump-ae",
        model_version="1.0.0",
        signals=SIGNALS,
        classes=CLASSES,
        gateway_id="gw-1",
        **kw,  # type: ignore[arg-type]
    )


def run(adv: Advisor, windows: Iterable[WindowResult]) -> list[Recommendation]:
    out: list[Recommendation] = []
    for w in windows:
        out += adv.evaluate([w])
    for rec in out:
        VALIDATOR.validate(rec.payload)
    return out


def test_raise_waits_for_debounce_then_fires_once() -> None:
    adv = advisor()
    # default pack: 3 of 4 windows. Two faulty windows with a normal one between: nothing.
    assert run(adv, [bearing(T0), window(T0 + 5), bearing(T0 + 10)]) == []
    recs = run(adv, [bearing(T0 + 15)])
    assert [(r.kind, r.payload["rule_id"]) for r in recs] == [("raise", "bearing-wear")]
    # The fault goes on for an hour: no flood.
    assert run(adv, (bearing(T0 + 20 + 5 * i) for i in range(720))) == []


def test_raise_payload_reads_like_advice() -> None:
    recs = run(advisor(), (bearing(T0 + 5 * i) for i in range(3)))
    (rec,) = recs
    p = rec.payload
    assert rec.severity == "warning"
    assert p["cause"] == {"class": "bearing_wear", "probability": 0.9}
    assert p["title"] == "bearing wear likely on pump-3"
    assert p["explanation"] == "vibration RMS +180% against baseline at 4.2 mm/s (zone C)"
    action = p["action"]
    assert isinstance(action, dict)
    assert action["due_within_h"] == 168
    assert "lubrication and a bearing inspection within 7 days" in action["text"]
    signals = p["signals"]
    assert isinstance(signals, list)
    assert signals[0]["signal"] == "vibration"
    assert signals[0]["direction"] == "up"
    assert signals[0]["change_pct"] == pytest.approx(180.0)
    assert p["rule_pack"] == {"name": "unit", "version": "0.1.0"}
    assert p["evidence"] == {
        "stats.vibration.mean": 4.2,
        "band.vib_zone": "C",
        "flag.running": True,
    }
    assert p["model"] == {"name": "pump-ae", "version": "1.0.0"}
    assert p["gateway"] == "gw-1"
    assert p["id"] == rec.id
    assert rec.to_json().startswith(b'{"schema":"edge-agent/recommendation/v1"')


def test_resolved_after_clear_holds_and_names_the_raise() -> None:
    adv = advisor()
    (raised,) = run(adv, (bearing(T0 + 5 * i) for i in range(6)))
    # 11 clean windows are not enough (12 of 12), the 12th resolves.
    assert run(adv, (window(T0 + 100 + 5 * i) for i in range(11))) == []
    (resolved,) = run(adv, [window(T0 + 155)])
    assert resolved.kind == "resolved"
    assert resolved.payload["resolves"] == raised.id
    assert resolved.payload["rule_id"] == "bearing-wear"


def test_flapping_signal_gives_one_raise_and_one_resolved() -> None:
    adv = advisor()
    # Vibration hovers around the raise limit (+25% of baseline) with the model unsure:
    # hysteresis keeps the recommendation open instead of re-raising.
    flap = []
    for i in range(200):
        high = i % 3 != 2  # above the limit in two of every three windows
        flap.append(bearing(T0 + 5 * i, vib=1.95 if high else 1.8, p=0.6 if high else 0.4))
    recs = run(adv, flap)
    recs += run(adv, (window(T0 + 1000 + 5 * i) for i in range(30)))
    assert [r.kind for r in recs] == ["raise", "resolved"]


def test_cooldown_holds_back_a_quick_return_then_lets_it_through() -> None:
    adv = advisor()
    before = metrics.RECOMMENDATIONS_SUPPRESSED.labels("cooldown")._value.get()
    first = run(adv, (bearing(T0 + 5 * i) for i in range(4)))
    first += run(adv, (window(T0 + 100 + 5 * i) for i in range(12)))
    assert [r.kind for r in first] == ["raise", "resolved"]
    # Back after ten minutes: inside the 4 h cooldown.
    assert run(adv, (bearing(T0 + 800 + 5 * i) for i in range(10))) == []
    assert metrics.RECOMMENDATIONS_SUPPRESSED.labels("cooldown")._value.get() > before
    later = run(adv, (bearing(T0 + 5 * 3600 + 5 * i) for i in range(4)))
    assert [r.kind for r in later] == ["raise"]


def test_escalates_once_to_critical_in_iso_zone_d() -> None:
    adv = advisor()
    recs = run(adv, (bearing(T0 + 5 * i, vib=3.5) for i in range(5)))
    recs += run(adv, (bearing(T0 + 100 + 5 * i, vib=6.0) for i in range(50)))
    assert [(r.kind, r.severity) for r in recs] == [("raise", "warning"), ("raise", "critical")]
    assert recs[1].payload["escalated_from"] == "warning"
    action = recs[1].payload["action"]
    assert isinstance(action, dict)
    assert action["due_within_h"] == 24


def test_each_asset_has_its_own_state() -> None:
    adv = advisor()
    recs = []
    for i in range(6):
        recs += adv.evaluate(
            [bearing(T0 + 5 * i, asset="pump-1"), window(T0 + 5 * i, asset="pump-2")]
        )
    assert [(r.kind, r.asset) for r in recs] == [("raise", "pump-1")]


def test_unknown_anomaly_needs_review_without_a_guessed_cause() -> None:
    adv = advisor()
    unsure = {"unknown": 0.45, "bearing_wear": 0.3, "normal": 0.25}
    windows = [
        window(T0 + 5 * i, score=2.5, probs=unsure, means={"current": 26.0}) for i in range(60)
    ]
    recs = run(adv, windows)
    assert [r.kind for r in recs] == ["needs_review"]
    p = recs[0].payload
    assert p["cause"] is None
    assert p["candidates"][0] == {"class": "unknown", "probability": 0.45}  # type: ignore[index]
    assert "led by current (up, +30% against baseline)" in str(p["explanation"])
    evidence = p["evidence"]
    assert isinstance(evidence, dict)
    assert set(evidence["stats"]) == set(SIGNALS)


def test_confident_fault_is_not_sent_for_review() -> None:
    recs = run(advisor(), (bearing(T0 + 5 * i) for i in range(60)))
    assert [r.kind for r in recs] == ["raise"]


def test_asset_metadata_reaches_the_message() -> None:
    meta = {"pump-3": AssetMeta(type="pump", criticality="high", state="running")}
    (rec,) = run(advisor(assets=meta), (bearing(T0 + 5 * i) for i in range(3)))
    assert rec.payload["asset_meta"] == {"type": "pump", "criticality": "high", "state": "running"}


def test_state_is_bounded_by_max_assets() -> None:
    adv = advisor(max_assets=2)
    before = metrics.ADVISOR_ASSETS_EVICTED._value.get()
    for i in range(5):
        adv.evaluate([window(T0, asset=f"pump-{i}")])
    assert metrics.ADVISOR_ASSETS_EVICTED._value.get() - before == 3


def test_a_failing_condition_is_counted_and_taken_as_false() -> None:
    adv = advisor()
    w = bearing(T0)
    broken = w._replace(stats={k: v for k, v in w.stats.items() if k != "vibration"})
    before = metrics.RULE_ERRORS.labels("bearing-wear")._value.get()
    assert run(adv, [broken] * 5) == []
    assert metrics.RULE_ERRORS.labels("bearing-wear")._value.get() > before


PACK = """\
pack: site
version: 2.0.0
defaults: {debounce: {n: 2, m: 2}, clear_debounce: {n: 2, m: 2}, cooldown_h: 0}
needs_review:
  when: "false"
  title: t
  explanation: e
  advice: a
  due_within_h: 1
rules:
  - id: bearing-wear
    fault: bearing_wear
    severity: warning
    raise: probs.bearing_wear > 0.5
    clear: probs.bearing_wear < 0.1
    title: "bearing {asset}"
    explanation: e
    advice: a
    due_within_h: 10
"""


def test_replace_pack_keeps_open_recommendations_and_rejects_bad_packs(tmp_path: Path) -> None:
    adv = advisor()
    (raised,) = run(adv, (bearing(T0 + 5 * i) for i in range(4)))
    site = tmp_path / "site.yaml"
    site.write_text(PACK)
    adv.replace_pack(load_pack([site]))
    assert adv.pack.name == "site"
    # Still open under the new pack: no second raise; its own (shorter) clear resolves it.
    assert run(adv, [bearing(T0 + 100), bearing(T0 + 105)]) == []
    (resolved,) = run(adv, [window(T0 + 110), window(T0 + 115)])
    assert resolved.payload["resolves"] == raised.id
    # A pack naming a signal the model lacks is refused; the old one keeps running.
    site.write_text(PACK.replace("probs.bearing_wear > 0.5", "stats.speed.mean > 1.0"))
    with pytest.raises(PackError, match="speed"):
        adv.replace_pack(load_pack([site]))
    assert adv.pack.name == "site"


def test_rules_removed_by_a_reload_close_their_open_recommendation(tmp_path: Path) -> None:
    adv = advisor()
    (raised,) = run(adv, (bearing(T0 + 5 * i) for i in range(4)))
    other = tmp_path / "other.yaml"
    other.write_text(PACK.replace("bearing-wear", "cav").replace("bearing_wear", "cavitation"))
    adv.replace_pack(load_pack([other]))
    (withdrawn,) = run(adv, [window(T0 + 100)])
    assert withdrawn.kind == "resolved"
    assert withdrawn.payload["resolves"] == raised.id


def misaligned(ts: float) -> WindowResult:
    probs = {"misalignment": 0.8, "normal": 0.2}
    return window(ts, score=2.0, probs=probs, means={"vibration": 4.2})


def test_inhibited_rule_stays_quiet_while_the_related_rule_is_open() -> None:
    adv = advisor()
    recs = run(adv, (bearing(T0 + 5 * i) for i in range(4)))
    # The model now calls the same vibration misalignment: bearing-wear already speaks.
    recs += run(adv, (misaligned(T0 + 100 + 5 * i) for i in range(20)))
    assert [(r.kind, r.payload["rule_id"]) for r in recs] == [("raise", "bearing-wear")]
    # On a pump without an open bearing-wear recommendation it raises as usual.
    alone = run(adv, (misaligned(T0 + 5 * i)._replace(asset="pump-9") for i in range(4)))
    assert [(r.kind, r.payload["rule_id"]) for r in alone] == [("raise", "misalignment")]


def test_flags_gate_rules_and_bands_label_values() -> None:
    stopped = [bearing(T0 + 5 * i) for i in range(10)]
    stopped = [
        w._replace(stats={**w.stats, "current": w.stats["current"]._replace(mean=0.2)})
        for w in stopped
    ]
    assert run(advisor(), stopped) == []
    nan = bearing(T0)
    nan = nan._replace(
        stats={**nan.stats, "vibration": nan.stats["vibration"]._replace(mean=float("nan"))}
    )
    pack = load_pack([unit_pack()])
    (band,) = pack.bands
    assert band.label({"stats": {"vibration": {"mean": 2.8}}}) == "C"  # an edge belongs above
    assert band.label({"stats": {"vibration": {"mean": 1.0}}}) == "A"
    assert band.label({"stats": {"vibration": {"mean": float("nan")}}}) == "unknown"
    assert band.label({}) == "unknown"


def test_default_pack_advice_reads_like_a_reliability_engineer() -> None:
    adv = advisor([default_pack_path()])
    windows = [bearing(T0 + 5 * i, vib=4.8, p=0.97) for i in range(40)]
    recs = run(adv, windows)
    assert [(r.kind, r.severity) for r in recs] == [("raise", "critical")]
    p = recs[0].payload
    assert p["title"] == "bearing wear likely on pump-3"
    explanation = str(p["explanation"])
    assert explanation.startswith(
        "bearing wear likely on pump-3 (97%): vibration 4.8 mm/s RMS, ISO 10816-3 zone D"
    )
    assert "+220% against the learned baseline" in explanation
    action = p["action"]
    assert isinstance(action, dict)
    assert action["due_within_h"] == 24
    assert action["text"].startswith("Schedule lubrication and a bearing inspection within 24 h")
    assert p["rule_pack"] == {"name": "default", "version": load_pack([]).version}


def test_macros_check_clean_and_see_the_whole_value(tmp_path: Path) -> None:
    text = UNIT.replace(
        "raise: probs.misalignment >= 0.5",
        "raise: contrib.exists(s, contrib[s] > 1.5) && probs.misalignment >= 0.5",
    )
    path = tmp_path / "macro.yaml"
    path.write_text(text)
    adv = advisor([path])
    quiet = [window(T0 + 5 * i, probs={"misalignment": 0.9}) for i in range(4)]
    assert run(adv, quiet) == []  # no signal contributes more than 1.5
    loud = [
        window(T0 + 100 + 5 * i, probs={"misalignment": 0.9}, means={"flow": 150.0})
        for i in range(4)
    ]
    assert [r.payload["rule_id"] for r in run(adv, loud)] == ["misalignment"]


def test_clear_can_compare_with_the_raising_window(tmp_path: Path) -> None:
    # Resolved only once vibration is back near the baseline the raising window had.
    text = UNIT.replace(
        "clear: probs.bearing_wear < 0.2 && stats.vibration.change_pct < 10.0",
        "clear: probs.bearing_wear < 0.2 "
        "&& stats.vibration.mean <= at_raise.stats.vibration.baseline + 0.2",
    )
    path = tmp_path / "at_raise.yaml"
    path.write_text(text)
    adv = advisor([path])
    assert [r.kind for r in run(adv, (bearing(T0 + 5 * i) for i in range(4)))] == ["raise"]
    # The model stops calling it, but the pump still vibrates at 2.5 mm/s (baseline 1.5).
    still = [window(T0 + 100 + 5 * i, means={"vibration": 2.5}) for i in range(30)]
    assert run(adv, still) == []
    back = [window(T0 + 300 + 5 * i) for i in range(12)]
    assert [r.kind for r in run(adv, back)] == ["resolved"]


def test_windows_across_a_data_gap_do_not_debounce_together() -> None:
    adv = advisor()
    before = [bearing(T0), bearing(T0 + 5)]
    after = [bearing(T0 + 3600), window(T0 + 3605), bearing(T0 + 3610)]
    assert run(adv, before + after) == []  # 4 faulty of the last 5, but an hour apart
    assert [r.kind for r in run(adv, [bearing(T0 + 3615)])] == ["raise"]
