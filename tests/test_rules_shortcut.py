"""Shortcuts (rules/shortcut.py) settle a condition only where CEL gives the same boolean.

Each check runs the real CEL library next to the shortcut: its `&&`/`||` semantics that the
shortcuts lean on, every condition of the default pack on windows built to hit the edges
(NaN, missing signals, ints, a numpy bool, strings where numbers are expected), and the
advisor itself with and without shortcuts on the same windows.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import cel
import numpy as np
import pytest

from edge_agent.core import metrics
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules import conditions, engine
from edge_agent.rules.engine import Advisor, activation, load_pack, pack_conditions
from edge_agent.rules.shortcut import compile_shortcut

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
CLASSES += ["stuck_sensor", "drifting_sensor", "unknown"]
BASE = {"temperature": 45.0, "vibration": 1.8, "current": 22.0, "pressure": 4.5, "flow": 80.0}
META = {"type": "pump", "criticality": "high", "state": "running"}


def _cel(source: str, values: dict[str, Any]) -> object:
    """CEL's answer: the value, or the exception type name when it fails."""
    try:
        return cel.compile(source).execute(cel.Context(values))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        return type(exc).__name__


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("m.missing > 1.0 && false", False),
        ("false && m.missing > 1.0", False),
        ("m.missing > 1.0 || true", True),
        ("true || m.missing > 1.0", True),
        ("m.a && false", False),  # a number where a boolean belongs: still absorbed
        ("true || m.a", True),
        ("(m.missing > 1.0 && false) || false", False),
        ("m.a >= k.i", True),  # double against int: heterogeneous comparison, no error
    ],
)
def test_cel_logic_is_commutative_as_the_shortcuts_assume(source: str, expected: bool) -> None:
    assert _cel(source, {"m": {"a": 1.0}, "k": {"i": 1}}) is expected


def _windows(rng: random.Random, n: int) -> Iterator[WindowResult]:
    for i in range(n):
        cls = rng.choice(CLASSES)
        stats: dict[str, SignalStats] = {}
        for s, b in BASE.items():
            if rng.random() < 0.03:
                continue  # a signal missing: CEL fails on it, the shortcut must not settle
            m = b * rng.choice([0.0, 0.5, 1.0, 1.0, 1.6, 2.5, 4.0])
            if rng.random() < 0.03:
                m = math.nan
            slope = rng.choice([0.0, 0.01, 0.05, -0.02])
            stats[s] = SignalStats(m, m, m * 0.9, m * 1.1, slope, b, (m - b) / b * 100)
        probs = dict.fromkeys(CLASSES, 0.01)
        probs[cls] = rng.choice([0.2, 0.5, 0.7, 0.95, 1.0])
        if rng.random() < 0.05:
            probs[cls] = math.nan
        score = rng.choice([0.1, 0.4, 0.6, 1.0, 2.5, math.inf])
        contrib = {s: rng.uniform(-1, 1) for s in stats}
        yield WindowResult(f"pump-{i % 5}", 1.8e9 + 5.0 * i, score, 1.0, contrib, probs, stats)


def _oddities(values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Variants of one window's values with types the shortcuts must leave to CEL."""
    yield values
    yield {**values, "anomalous": np.bool_(values["anomalous"])}
    yield {**values, "ratio": "high"}
    yield {**values, "k": {**values["k"], "p_fault": 1, "running_a": True}}
    yield {**values, "flag": {"running": 1}}
    yield {k: v for k, v in values.items() if k != "probs"}
    yield {**values, "band": {"vib_zone": 3}}


def test_a_settled_condition_is_what_cel_says() -> None:
    pack = load_pack([])
    conds = pack_conditions(pack)
    settled = undecided = 0
    for result in _windows(random.Random(3), 150):
        base = activation(result, CLASSES, META, pack)
        base["flag"] = {"running": bool(result.stats.get("current"))}
        for values in _oddities(base):
            for cond in conds:
                got = cond.shortcut(values)
                if got is None:
                    undecided += 1
                    continue
                settled += 1
                assert _cel(cond.source, values) is got, (cond.source, values)
    # Both paths are exercised: most conditions settle, some go to CEL.
    assert settled > undecided > 0


@pytest.mark.parametrize(
    "source",
    [
        'band.x == "a && b" || anomalous',  # operators inside a string do not split
        "anomalous ? true : false",
        "anomalous || k.a >= 1.0 // comment",
        "anomalous && meta.type == 'p\\'' ",
        "anomalous && r'x' == meta.type",
        "!anomalous == false",
        "!k.a > 1.0",  # `!` binds to `k.a`: not a negated comparison
        "anomalous && k.a + 1.0 > 2.0",
        "anomalous && probs['x'] > 0.5",
        "anomalous && contrib.exists(s, contrib[s] > 0.5)",
        "-k.a < 0.0 && anomalous",
    ],
)
def test_forms_outside_the_subset_go_to_cel_or_agree_with_it(source: str) -> None:
    values: dict[str, Any] = {
        "anomalous": True,
        "k": {"a": 2.0},
        "band": {"x": "a && b"},
        "meta": {"type": "p'"},
        "probs": {"x": 0.9},
        "contrib": {"s": 0.7},
    }
    got = compile_shortcut(source)(values)
    assert got is None or got is _cel(source, values)


def test_a_long_conjunction_still_compiles_and_settles() -> None:
    source = " && ".join(f"k.a{i} > 1.0" for i in range(300))
    shortcut = compile_shortcut(source)
    high = {"k": {f"a{i}": 2.0 for i in range(300)}}
    assert shortcut(high) is True
    assert shortcut({"k": high["k"] | {"a299": 0.5}}) is False
    assert shortcut({"k": {}}) is None


def test_shortcuts_settle_the_default_pack_on_a_normal_window() -> None:
    pack = load_pack([])
    result = next(_windows(random.Random(1), 1))._replace(
        score=0.3, probs=dict.fromkeys(CLASSES, 0.01) | {"normal": 0.97}
    )
    values = activation(result, CLASSES, META, pack)
    flag = pack.flags[0].when
    assert flag.shortcut(values) is True
    values["flag"] = {"running": True}
    for cond in [*(r.raise_when for r in pack.rules), pack.review.when]:
        assert cond.shortcut(values) is False, cond.source


def test_stats_values_are_the_named_tuple_as_a_dict() -> None:
    st = SignalStats(1.0, 2.0, 0.5, 1.5, 0.01, 0.9, 11.1)
    assert engine._stats_values(st) == st._asdict()


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
        probs[cls] = rng.choice([0.6, 0.95]) if faulty else 0.97
        score = rng.choice([0.8, 2.5]) if faulty else abs(rng.gauss(0.3, 0.3))
        contrib = {s: rng.uniform(-1, 1) for s in stats}
        out.append(
            WindowResult(f"pump-{asset}", 1.8e9 + 5.0 * (i // 5), score, 1.0, contrib, probs, stats)
        )
    return out


def _run(advisor: Advisor, windows: list[WindowResult]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for k in range(0, len(windows), 16):
        for rec in advisor.evaluate(windows[k : k + 16]):
            p = rec.payload
            out.append((rec.kind, rec.asset, rec.severity, p.get("rule_id"), p["window_ts"]))
            out.append((p["title"], p["explanation"], p["action"], p.get("evidence")))
    return out


def test_advisor_gives_the_same_messages_and_errors_with_and_without_shortcuts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    windows = _episodes(random.Random(11), 3000)

    def advisor() -> Advisor:
        return Advisor(
            load_pack([]),
            model_name="m",
            model_version="1",
            signals=SIGNALS,
            classes=CLASSES,
            gateway_id="gw",
        )

    def errors() -> list[float]:
        ids = ["flag:running", "needs_review", *(r.id for r in load_pack([]).rules)]
        return [metrics.RULE_ERRORS.labels(i)._value.get() for i in ids]

    before = errors()
    fast = _run(advisor(), windows)
    fast_errors = [b - a for a, b in zip(before, errors(), strict=True)]
    with monkeypatch.context() as m:
        m.setattr(conditions, "compile_shortcut", lambda _source: lambda _values: None)
        slow_advisor = advisor()
        assert all(c.shortcut({}) is None for c in pack_conditions(slow_advisor.pack))
        before = errors()
        slow = _run(slow_advisor, windows)
    slow_errors = [b - a for a, b in zip(before, errors(), strict=True)]
    kinds = {k[0] for k in fast[::2]}
    assert kinds == {"raise", "resolved", "needs_review"}, kinds
    assert fast == slow
    assert sum(slow_errors) > 0  # missing signals make conditions fail in CEL ...
    assert fast_errors == slow_errors  # ... and are counted alike
