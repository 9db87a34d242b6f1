"""Guards (rules/guards.py): the cheap part of a condition, data that Python checks before CEL.

A false guard settles a condition with no CEL evaluated and no CEL context built; a true
one leaves the decision to CEL; each guard test means what the same comparison means in
CEL, errors included; a guard naming something the model or the pack lacks is a pack error
at its line. And the default pack, rewritten with guards, decides exactly as the all-CEL
pack before it did, on windows built to hit the edges.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.core import metrics
from edge_agent.core.errors import RuleError
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules import window
from edge_agent.rules.conditions import Condition
from edge_agent.rules.engine import Advisor, load_pack
from edge_agent.rules.pack import RulePack, default_pack_path
from tests.test_rules_pack import problems_of

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
CLASSES += ["stuck_sensor", "drifting_sensor", "unknown"]
BASE = {"temperature": 45.0, "vibration": 1.8, "current": 22.0, "pressure": 4.5, "flow": 80.0}
T0 = 1.8e9

PACK = """\
pack: guards
version: 0.1.0
constants: {p: 0.5}
bands:
  zone: {of: stats.vibration.mean, edges: [2.8, 4.5], labels: [ok, C, D]}
flags:
  running: {guard: {stats: {current.mean: {at_least: 3.0}}}}
needs_review:
  when: {guard: {anomalous: true}, cel: "false"}
  title: t
  explanation: e
  advice: a
  due_within_h: 1
rules:
  - id: bearing
    fault: bearing_wear
    severity: warning
    debounce: {n: 1, m: 1}
    raise:
      guard: {probs: {bearing_wear: {at_least: k.p}}, flag: running}
      cel: CEL
    clear: probs.bearing_wear < 0.2
    title: t
    explanation: e
    advice: a
    due_within_h: 1
"""


def pack(tmp_path: Path, cel: str) -> RulePack:
    path = tmp_path / "guards.yaml"
    path.write_text(PACK.replace("CEL", cel))
    return load_pack([path])


def result(
    p: float = 0.0, score: float = 0.3, means: dict[str, float] | None = None
) -> WindowResult:
    means = {**BASE, **(means or {})}
    stats = {s: SignalStats(m, m, m, m, 0.0, BASE[s], 0.0) for s, m in means.items()}
    probs = {"bearing_wear": p, "normal": 1.0 - p}
    return WindowResult("pump-1", T0, score, 1.0, dict.fromkeys(means, 0.0), probs, stats)


def view(rp: RulePack, r: WindowResult, *, raised: bool = False) -> window.Window:
    """The window as the advisor has it: flags evaluated, and (`raised`) `at_raise` set."""
    w = window.Window(r, CLASSES, {"type": "pump"}, rp, window.Scope(rp.constants))
    w.flags = {f.name: _outcome(f.when, w) is True for f in rp.flags}
    if raised:
        w.at_raise = w.raised()  # this window's own values, for clear and escalate
    return w


def _outcome(cond: Condition, w: window.Window) -> object:
    try:
        return cond.holds(w)
    except RuleError:
        return "error"


def test_a_false_guard_evaluates_no_cel(tmp_path: Path) -> None:
    # The CEL part fails wherever it runs: the model has no signal `nosuch`.
    rp = pack(tmp_path, "stats.nosuch.mean > 1.0")
    raise_when = rp.rules[0].raise_when
    normal = view(rp, result(p=0.1))
    assert raise_when.holds(normal) is False
    stopped = view(rp, result(p=0.9, means={"current": 0.0}))
    assert raise_when.holds(stopped) is False
    # Nothing was built for them: no values, no CEL context.
    for w in (normal, stopped):
        assert w._built == {}
        assert w._scope is not None
        assert w._scope.windows == 0
    with pytest.raises(RuleError, match="nosuch"):
        raise_when.holds(view(rp, result(p=0.9)))


def test_a_true_guard_leaves_the_decision_to_cel(tmp_path: Path) -> None:
    rp = pack(tmp_path, "anomalous")
    raise_when = rp.rules[0].raise_when
    assert raise_when.holds(view(rp, result(p=0.9, score=2.0))) is True
    assert raise_when.holds(view(rp, result(p=0.9, score=0.5))) is False


def test_the_advisor_counts_cel_errors_only_where_the_guard_held(tmp_path: Path) -> None:
    # Integer division by zero: passes `rules check`, fails whenever it runs.
    rp = pack(tmp_path, "1 / int(score - score) > 0")
    adv = Advisor(
        rp, model_name="m", model_version="1", signals=SIGNALS, classes=CLASSES, gateway_id="g"
    )
    errors = metrics.RULE_ERRORS.labels("bearing")
    before = errors._value.get()
    adv.evaluate([result(p=0.1)._replace(ts=T0 + 5 * i) for i in range(20)])
    assert errors._value.get() == before
    assert adv._scope.windows == 0
    adv.evaluate([result(p=0.9)._replace(ts=T0 + 200 + 5 * i) for i in range(3)])
    assert errors._value.get() == before + 3
    assert adv._scope.windows == 3


@pytest.mark.parametrize(
    ("guard", "cel"),
    [
        ({"probs": {"bearing_wear": {"at_least": "k.p"}}}, "probs.bearing_wear >= k.p"),
        ({"probs": {"bearing_wear": {"below": 0.2}}}, "probs.bearing_wear < 0.2"),
        ({"ratio": {"at_least": 1.5, "below": 3}}, "ratio >= 1.5 && ratio < 3"),
        ({"anomalous": False}, "!anomalous"),
        ({"flag": "running"}, "flag.running"),
        ({"band": {"zone": ["C", "D"]}}, 'band.zone in ["C", "D"]'),
        ({"stats": {"vibration.mean": {"below": "k.p"}}}, "stats.vibration.mean < k.p"),
        (
            {"stats": {"temperature.max": {"at_least": 80.0}, "vibration.mean": {"below": 4.5}}},
            "stats.temperature.max >= 80.0 && stats.vibration.mean < 4.5",
        ),
        (
            {"anomalous": True, "probs": {"bearing_wear": {"at_least": 0.5}}, "flag": "running"},
            "anomalous && probs.bearing_wear >= 0.5 && flag.running",
        ),
    ],
)
def test_a_guard_test_means_what_cel_means_errors_included(
    tmp_path: Path, guard: dict[str, Any], cel: str
) -> None:
    # One rule: the guard alone as its raise condition, the same test in CEL as its clear.
    data = yaml.safe_load(PACK)
    data["rules"][0]["raise"] = {"guard": guard}
    data["rules"][0]["clear"] = cel
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    rp = load_pack([path])
    pair = rp.rules[0]
    rng = random.Random(5)
    seen = set()
    for _ in range(400):
        means = {s: b * rng.choice([0.0, 1.0, 1.6, 2.5, math.nan]) for s, b in BASE.items()}
        means = {s: m for s, m in means.items() if rng.random() > 0.1}  # missing signals
        p = rng.choice([0.1, 0.2, 0.5, 0.9, math.nan])
        score = rng.choice([0.5, 1.0, 2.0, math.inf])
        w = view(rp, result(p, score, means))
        got = _outcome(pair.raise_when, w), _outcome(pair.clear_when, w)
        assert got[0] == got[1], (guard, cel, means, p, score)
        seen.add(got[0])
    # A missing signal or NaN fails a comparison, in either; a flag or a band label cannot.
    assert seen == {True, False, "error"} if {"probs", "stats"} & set(guard) else {True, False}


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("flag: running}", "flag: running, clas: x}", "clas", "unknown field 'clas'"),
        ("{at_least: k.p}", "{atleast: k.p}", "atleast", "unknown field 'atleast'"),
        ("{at_least: k.p}", "{}", "guard: {probs", "should be non-empty"),
        ("{at_least: k.p}", "{at_least: p}", "guard: {probs", "does not match"),
        (
            "{bearing_wear:",
            "{bearing_war:",
            "guard: {probs",
            "raise: guard: probs.bearing_war:",
        ),
        (
            "k.p}",
            "k.q}",
            "guard: {probs",
            "rule bearing: raise: guard: probs.bearing_wear: k.q:",
        ),
        ("flag: running}", "flag: [running, stopped]}", "guard: {probs", "no flag 'stopped'"),
        ("flag: running}", "flag: running, band: {zone: [C, E]}}", "guard: {probs", "no label 'E'"),
        ("flag: running}", "flag: running, band: {zones: C}}", "guard: {probs", "no band 'zones'"),
        ("{current.mean:", "{current.peak:", "running:", "no statistic 'peak'"),
        ("{current.mean:", "{curent.mean:", "running:", "the model has no signal 'curent'"),
        ("cel: CEL", "cel: probs.bearing < 0.2", "cel: probs", "no key 'bearing'"),
        ("cel: CEL", "cel: anomalus", "cel: anomalus", "unknown variable 'anomalus'"),
        ("cel: CEL", "cel: band.zone > 1.0", "cel: band", "No such overload"),
    ],
)
def test_a_bad_guard_or_cel_part_is_a_pack_error_at_its_line(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    good = PACK.replace("CEL", "anomalous")
    assert problems_of(tmp_path, good) == []
    text = PACK.replace(old, new, 1).replace("CEL", "anomalous")
    problems = problems_of(tmp_path, text)
    hit = [p for p in problems if message in p.message]
    assert hit, [str(p) for p in problems]
    assert hit[0].line == next(i for i, s in enumerate(text.splitlines(), 1) if needle in s)


# The default pack's conditions as plain CEL, as they were before guards (version 1.3.0).
RUNNING = "stats.current.mean >= k.running_a || stats.flow.mean >= k.running_flow"
REVIEW = (
    'anomalous && !(top_class in ["bearing_wear", "cavitation", "misalignment", "overheating",'
    ' "stuck_sensor", "drifting_sensor"] && top_prob >= k.p_fault)'
)
SURE = "probs.{c} >= k.p_sure && ratio >= k.ratio_elevated"
ALL_CEL: dict[str, tuple[str, str, list[str]]] = {
    "bearing-wear": (
        (
            "flag.running && probs.bearing_wear >= k.p_fault"
            ' && (anomalous || band.vib_zone in ["C", "D"])'
        ),
        (
            "flag.running && probs.bearing_wear < k.p_clear && !anomalous"
            ' && band.vib_zone in ["A", "B"]'
        ),
        ['band.vib_zone == "D"'],
    ),
    "cavitation": (
        (
            "flag.running && probs.cavitation >= k.p_fault"
            f" && (anomalous || {SURE.format(c='cavitation')})"
        ),
        "flag.running && probs.cavitation < k.p_clear && !anomalous",
        ['band.vib_zone == "D"'],
    ),
    "misalignment": (
        "flag.running && probs.misalignment >= k.p_fault && anomalous",
        (
            "flag.running && probs.misalignment < k.p_clear && !anomalous"
            ' && band.vib_zone in ["A", "B"]'
        ),
        ['band.vib_zone == "D"'],
    ),
    "overheating": (
        (
            "flag.running && probs.overheating >= k.p_fault"
            f" && ((anomalous || {SURE.format(c='overheating')})"
            " && stats.temperature.slope >= k.heating_c_per_s"
            " || stats.temperature.mean >= k.temp_alarm_c)"
        ),
        (
            "flag.running && probs.overheating < k.p_clear && !anomalous"
            " && stats.temperature.mean < k.temp_alarm_c"
            " && stats.temperature.mean <= at_raise.stats.temperature.baseline + k.temp_back_c"
        ),
        ["stats.temperature.max >= k.temp_alarm_c"],
    ),
    "stuck-sensor": (
        (
            "flag.running && probs.stuck_sensor >= k.p_fault"
            f" && (anomalous || {SURE.format(c='stuck_sensor')})"
        ),
        "probs.stuck_sensor < k.p_clear && !anomalous",
        [],
    ),
    "drifting-sensor": (
        (
            "flag.running && (probs.drifting_sensor >= k.p_fault && anomalous"
            " || probs.drifting_sensor >= k.p_sure)"
        ),
        "probs.drifting_sensor < k.p_clear && !anomalous",
        [],
    ),
}


def _all_cel_pack(tmp_path: Path) -> Path:
    data = yaml.safe_load(default_pack_path().read_text())
    data["flags"]["running"] = RUNNING
    data["needs_review"]["when"] = REVIEW
    for rule in data["rules"]:
        rule["raise"], rule["clear"], escalations = ALL_CEL[rule["id"]]
        for esc, when in zip(rule.get("escalate", []), escalations, strict=True):
            esc["when"] = when
    path = tmp_path / "all-cel.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _episodes(rng: random.Random, n: int) -> list[WindowResult]:
    """Five assets through long fault episodes (so rules raise, escalate and resolve), with a
    few NaN values and missing signals on the way (so CEL fails, and is counted)."""
    out = []
    for i in range(n):
        asset = i % 5
        episode = (i // 5) // 90
        cls = CLASSES[(asset + episode) % len(CLASSES)] if episode % 2 else "normal"
        faulty = cls != "normal"
        stats = {}
        for s, b in BASE.items():
            if rng.random() < 0.01:
                continue
            m = b * (1.0 + rng.gauss(0, 0.02) + (1.8 if faulty and s == "vibration" else 0.0))
            if faulty and s == "temperature" and cls == "overheating":
                m = 85.0
            if rng.random() < 0.01:
                m = math.nan
            stats[s] = SignalStats(m, m, m * 0.9, m * 1.1, 0.03 if faulty else 0.0, b, 5.0)
        probs = dict.fromkeys(CLASSES, 0.01)
        probs[cls] = rng.choice([0.3, 0.6, 0.95]) if faulty else 0.97
        if rng.random() < 0.01:
            probs[cls] = math.nan
        score = rng.choice([0.8, 2.5]) if faulty else abs(rng.gauss(0.3, 0.3))
        contrib = {s: rng.uniform(-1, 1) for s in stats}
        ts = T0 + 5.0 * (i // 5)
        out.append(WindowResult(f"pump-{asset}", ts, score, 1.0, contrib, probs, stats))
    return out


def _run(rp: RulePack, windows: list[WindowResult]) -> tuple[list[tuple[object, ...]], list[float]]:
    adv = Advisor(
        rp, model_name="m", model_version="1", signals=SIGNALS, classes=CLASSES, gateway_id="g"
    )
    ids = ["flag:running", "needs_review", *(r.id for r in rp.rules)]
    before = [metrics.RULE_ERRORS.labels(i)._value.get() for i in ids]
    out: list[tuple[object, ...]] = []
    for k in range(0, len(windows), 16):
        for rec in adv.evaluate(windows[k : k + 16]):
            p = rec.payload
            out.append((rec.kind, rec.asset, rec.severity, p.get("rule_id"), p["window_ts"]))
            out.append((p["title"], p["explanation"], p["action"], p.get("evidence")))
    after = [metrics.RULE_ERRORS.labels(i)._value.get() for i in ids]
    return out, [a - b for a, b in zip(after, before, strict=True)]


def test_each_default_condition_decides_as_its_all_cel_form(tmp_path: Path) -> None:
    guarded, all_cel = load_pack([]), load_pack([_all_cel_pack(tmp_path)])
    pairs = list(zip(guarded.conditions(), all_cel.conditions(), strict=True))
    seen: set[object] = set()
    for r in _episodes(random.Random(3), 1500):
        a, b = view(guarded, r, raised=True), view(all_cel, r, raised=True)
        for i, (mine, theirs) in enumerate(pairs):
            got = _outcome(mine, a)
            assert got == _outcome(theirs, b), (i, r)
            seen.add(got)
    assert seen == {True, False, "error"}


def test_the_guarded_default_pack_decides_as_the_all_cel_one(tmp_path: Path) -> None:
    windows = _episodes(random.Random(11), 3000)
    guarded, guarded_errors = _run(load_pack([]), windows)
    all_cel, all_cel_errors = _run(load_pack([_all_cel_pack(tmp_path)]), windows)
    kinds = {k[0] for k in guarded[::2]}
    assert kinds == {"raise", "resolved", "needs_review"}, kinds
    assert guarded == all_cel
    assert sum(all_cel_errors) > 0  # missing signals and NaN make conditions fail ...
    assert guarded_errors == all_cel_errors  # ... and are counted alike


def test_window_values_are_built_root_by_root() -> None:
    rp = load_pack([])
    r = result(p=0.9, score=2.0)
    w = window.Window(r, CLASSES, {"type": "pump"}, rp)
    assert w["ratio"] == 2.0
    assert set(w._built) == {"ratio"}
    assert w["top_class"] == "bearing_wear"
    assert w["band"] == {"vib_zone": "B"}
    assert set(w._built) == {"ratio", "probs", "top_class", "stats", "band"}
    assert list(dict(w)) == list(window._BUILD)


def test_stats_values_are_the_named_tuple_as_a_dict() -> None:
    st = SignalStats(1.0, 2.0, 0.5, 1.5, 0.01, 0.9, 11.1)
    assert window._stats_values(st) == st._asdict()
