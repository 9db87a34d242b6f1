"""The learned pack (rules/packs/learned.yaml) and the roles it reads, on hand-built windows.

A learned model has no fault classes: a window is a signed contribution per signal (+1 is the
upper alarm limit, -1 the lower) and score = max |contribution|. The windows here are built
with roles and no model: each pattern of the pack gives its mechanism, anything else the
honest "abnormal, led by X"; one recommendation per episode, raised on its first anomalous
window and resolved on the 10th consecutive window under 0.7 of the threshold, never another
between; and role names the model or the vocabulary lacks are pack errors naming rule and key.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from edge_agent.core.errors import ConfigError, RuleError
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules.check import check_pack
from edge_agent.rules.conditions import Condition
from edge_agent.rules.engine import Advisor, Recommendation, load_pack
from edge_agent.rules.pack import PackError, Problem, RulePack, default_pack_path
from edge_agent.rules.recommendation import recommendation_schema
from edge_agent.rules.window import Roles, Scope, Window
from tests.test_rules_pack import run_cli

# A pump shaped like SKAB's test bed: eight signals, two of them vibration, two temperature.
SIGNALS = ["acc1", "acc2", "current", "pressure", "motor_temp", "fluid_temp", "voltage", "flow"]
ROLES = ["vibration", "vibration", "current", "pressure"]
ROLES += ["temperature", "temperature", "voltage", "flow"]
CLASSES = ["normal", "unknown"]
BASE = {"acc1": 0.21, "acc2": 0.27, "current": 1.9, "pressure": 0.9, "motor_temp": 70.0}
BASE |= {"fluid_temp": 24.0, "voltage": 230.0, "flow": 32.0}
ALARM = 0.05  # each signal's alarm distance, as a fraction of its baseline
T0 = 1_800_000_000.0
VALIDATOR = jsonschema.Draft202012Validator(recommendation_schema())


def window(
    ts: float,
    contrib: dict[str, float] | None = None,
    *,
    asset: str = "pump-1",
    signals: list[str] = SIGNALS,
) -> WindowResult:
    """A learned model's window: every signal at its baseline unless `contrib` moves it."""
    c = dict.fromkeys(signals, 0.0) | (contrib or {})
    stats = {}
    for s in signals:
        b = BASE[s]
        m = b * (1.0 + ALARM * c[s])
        stats[s] = SignalStats(m, m, m, m, 0.0, b, (m - b) / b * 100.0)
    score = max(abs(v) for v in c.values())
    probs = {"unknown": min(1.0, score), "normal": 1.0 - min(1.0, score)}
    return WindowResult(asset, ts, score, 1.0, c, probs, stats)


def quiet(ts: float, ratio: float, asset: str = "pump-1") -> WindowResult:
    """A window whose score is `ratio` of the threshold, led by flow."""
    return window(ts, {"flow": -ratio}, asset=asset)


def learned_pack() -> RulePack:
    return load_pack([default_pack_path("learned")])


def advisor(
    pack: RulePack | None = None,
    signals: list[str] = SIGNALS,
    roles: list[str] | None = ROLES,
) -> Advisor:
    return Advisor(
        pack or learned_pack(),
        model_name="learned-pump",
        model_version="1",
        signals=signals,
        classes=CLASSES,
        gateway_id="gw-1",
        roles=roles,
    )


def raised_by(contrib: dict[str, float], adv: Advisor | None = None) -> Recommendation:
    """The one message the first anomalous window gives after a quiet minute."""
    adv = adv or advisor()
    assert adv.evaluate([quiet(T0 + i, 0.1) for i in range(60)]) == []
    out = adv.evaluate([window(T0 + 60, contrib)])
    assert [r.kind for r in out] == ["raise"], out
    VALIDATOR.validate(out[0].payload)
    return out[0]


def text(rec: Recommendation) -> str:
    p = rec.payload
    action = p["action"]
    assert isinstance(action, dict)
    return f"{p['title']}\n{p['explanation']}\n{action['text']}"


# contributions of the raising window -> the rule that speaks, and words its text must hold.
PATTERNS = [
    pytest.param(
        {"flow": -1.3, "pressure": -0.6, "current": -0.5},
        "loss-of-fluid",
        ["leaks", "air"],
        id="flow-pressure-current-down",
    ),
    pytest.param(
        {"flow": -1.2, "acc2": 0.6}, "restricted-suction", ["suction valve"], id="flow-down-vib-up"
    ),
    pytest.param(
        {"acc2": 1.1, "flow": -0.4},
        "restricted-suction",
        ["strainer", "cavitat"],
        id="vib-up-flow-falling",
    ),
    pytest.param(
        {"flow": -1.1, "pressure": 0.5}, "discharge-restriction", ["discharge"], id="flow-down-p-up"
    ),
    pytest.param({"acc2": 1.1, "flow": 0.4}, "flow-high", ["less resistance"], id="vib-up-flow-up"),
    pytest.param({"flow": 1.2, "current": 0.4}, "flow-high", ["bypass"], id="flow-up-current-up"),
    pytest.param(
        {"current": 1.2, "motor_temp": 0.6},
        "overload",
        ["friction", "bearing"],
        id="current-up-temperature-up",
    ),
    pytest.param(
        {"acc1": 1.1, "acc2": 1.5, "flow": 0.05, "pressure": 0.1, "current": -0.6},
        "mechanical",
        ["imbalance", "misalignment", "looseness", "bearing"],
        id="vib-up-hydraulics-steady",
    ),
    pytest.param({"voltage": -1.3, "current": 0.6}, "supply", ["electrical"], id="voltage-leads"),
    pytest.param({"flow": -1.05}, "flow-low", ["restriction", "leak"], id="flow-down-alone"),
    pytest.param(
        {"flow": -1.01, "acc2": -0.9}, "flow-low", ["restriction", "leak"], id="flow-and-vib-down"
    ),
    pytest.param(
        {"motor_temp": 1.2}, "cooling", ["cooling", "fan"], id="temperature-up-current-not"
    ),
    pytest.param(
        {"acc2": -1.02, "flow": -0.39}, "sensor", ["suspect the sensor"], id="vib-down-alone"
    ),
    pytest.param({"current": 1.3}, "sensor", ["suspect the sensor"], id="current-up-alone"),
]


@pytest.mark.parametrize(("contrib", "rule", "words"), PATTERNS)
def test_each_pattern_names_its_mechanism_and_the_lead(
    contrib: dict[str, float], rule: str, words: list[str]
) -> None:
    rec = raised_by(contrib)
    assert rec.payload["rule_id"] == rule
    said = text(rec)
    for word in words:
        assert word in said, (word, said)
    # The leading signal, its role, direction and change against baseline.
    lead = max(contrib, key=lambda s: abs(contrib[s]))
    role = ROLES[SIGNALS.index(lead)]
    up = contrib[lead] > 0
    change = f"{window(T0, contrib).stats[lead].change_pct:+.1f}%"
    assert lead in said
    assert role in said
    assert ("up" if up else "down") in said
    assert change in said, (change, said)
    # A mechanism, not a model class: no probability is claimed for it.
    assert rec.payload["cause"] == {"class": rec.payload["cause"]["class"], "probability": None}  # type: ignore[index]
    signals = rec.payload["signals"]
    assert isinstance(signals, list)
    assert signals[0]["signal"] == lead
    assert signals[0]["role"] == role


@pytest.mark.parametrize(
    "contrib",
    [
        pytest.param({"pressure": 1.2, "fluid_temp": -0.8}, id="pressure-up-temp-down"),
        pytest.param({"current": -1.2, "acc1": 0.7}, id="current-down-vib-up"),
    ],
)
def test_a_pattern_the_pack_does_not_know_is_said_honestly(contrib: dict[str, float]) -> None:
    rec = raised_by(contrib)
    assert rec.payload["rule_id"] == "abnormal"
    assert rec.payload["cause"] == {"class": "unexplained", "probability": None}
    lead = max(contrib, key=lambda s: abs(contrib[s]))
    role = ROLES[SIGNALS.index(lead)]
    direction = "up" if contrib[lead] > 0 else "down"
    said = f"{rec.payload['title']}\n{rec.payload['explanation']}"
    assert f"led by {lead} ({role}, {direction})" in said
    assert "no cause is named" in said
    # No mechanism sneaks in (the advice may still list what a walk-down looks at).
    for word in ("leak", "cavitat", "imbalance", "restriction", "sensor", "overload"):
        assert word not in said, word


def test_mechanical_needs_a_hydraulic_signal_to_rule_out_the_process() -> None:
    # Without flow or pressure, vibration up cannot be told from a process cause.
    signals = ["acc1", "current", "motor_temp"]
    roles = ["vibration", "current", "temperature"]
    adv = advisor(signals=signals, roles=roles)
    rec = adv.evaluate([window(T0, {"acc1": 1.4, "current": 0.6}, signals=signals)])[0]
    assert rec.payload["rule_id"] == "abnormal"
    # With pressure alone (no flow meter), steady pressure is enough.
    signals = ["acc1", "current", "pressure"]
    adv = advisor(signals=signals, roles=["vibration", "current", "pressure"])
    rec = adv.evaluate([window(T0, {"acc1": 1.4, "current": 0.6}, signals=signals)])[0]
    assert rec.payload["rule_id"] == "mechanical"


def test_raise_on_the_first_anomalous_window_and_clear_on_the_tenth_under_0_7() -> None:
    adv = advisor()
    ratios = [0.2] * 5 + [1.3, 1.1, 0.8, 0.9] + [0.5] * 9 + [0.7] + [0.69] * 9 + [0.3, 0.2]
    messages: dict[int, list[str]] = {}
    for i, ratio in enumerate(ratios):
        out = adv.evaluate([quiet(T0 + i, ratio)])
        if out:
            messages[i] = [r.kind for r in out]
    first = ratios.index(1.3)
    # 0.7 is not under 0.7: the nine windows before it do not count, the ten after it do.
    tenth = len(ratios) - 2
    assert messages == {first: ["raise"], tenth: ["resolved"]}
    # No cooldown: the next anomalous window opens the next episode at once.
    out = adv.evaluate([quiet(T0 + len(ratios), 1.2)])
    assert [r.kind for r in out] == ["raise"]


def test_one_recommendation_per_episode_whatever_the_pattern_does() -> None:
    adv = advisor()
    # Raised as flow low; then every other pattern shows while it stays anomalous.
    others = [p.values[0] for p in PATTERNS] + [{"pressure": 3.0}, {"acc1": -2.0}]
    episode = [window(T0, {"flow": -1.05})]
    episode += [window(T0 + 1 + i, c) for i, c in enumerate(others)]  # type: ignore[arg-type]
    episode += [quiet(T0 + 100 + i, 0.4) for i in range(10)]
    out = adv.evaluate(episode)
    assert [(r.kind, r.payload["rule_id"]) for r in out] == [
        ("raise", "flow-low"),
        ("resolved", "flow-low"),
    ]
    assert out[1].payload["resolves"] == out[0].id
    assert out[1].payload["window_ts"] == T0 + 109
    # needs_review never speaks: `abnormal` takes every anomaly no pattern explains.
    assert all(r.kind != "needs_review" for r in out)


def test_assets_have_their_own_episodes() -> None:
    adv = advisor()
    out = adv.evaluate(
        [window(T0, {"flow": -1.2}, asset="a"), window(T0, {"acc1": 1.2, "acc2": 1.3}, asset="b")]
    )
    assert [(r.asset, r.payload["rule_id"]) for r in out] == [
        ("a", "flow-low"),
        ("b", "mechanical"),
    ]


def test_the_first_rule_of_a_group_that_raises_speaks(tmp_path: Path) -> None:
    # Both rules hold in the raising window; the one written first speaks, the other never.
    data = yaml.safe_load(default_pack_path("learned").read_text())
    abnormal = data["rules"][-1]
    data["rules"] = [dict(abnormal, id="first"), dict(abnormal, id="second")]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(data))
    adv = advisor(load_pack([path]))
    out = adv.evaluate([window(T0 + i, {"flow": -1.5}) for i in range(5)])
    assert [(r.kind, r.payload["rule_id"]) for r in out] == [("raise", "first")]


def test_without_a_catch_all_rule_needs_review_opens_once(tmp_path: Path) -> None:
    # The safety net: a site pack without `abnormal`, an anomaly no pattern explains.
    data = yaml.safe_load(default_pack_path("learned").read_text())
    data["rules"] = [r for r in data["rules"] if r["id"] != "abnormal"]
    path = tmp_path / "no-catch-all.yaml"
    path.write_text(yaml.safe_dump(data))
    adv = advisor(load_pack([path]))
    out = adv.evaluate([window(T0 + i, {"pressure": 1.5, "acc1": 0.8}) for i in range(5)])
    assert [r.kind for r in out] == ["needs_review"]
    assert "no rule of the pack took it up" in str(out[0].payload["explanation"])


PAIR = """\
pack: pair
version: 0.1.0
model_kind: learned
constants: {joins: 0.3}
needs_review: {when: "false", title: t, explanation: e, advice: a, due_within_h: 1}
rules:
  - id: pair
    fault: p
    severity: info
    raise: "true"
    clear: "true"
    title: "{lead.signal} {lead.role} {role.flow.signal} {role.flow.direction}"
    explanation: e
    advice: a
    due_within_h: 1
"""


@pytest.mark.parametrize(
    ("guard", "cel"),
    [
        ({"lead_role": ["flow", "vibration"]}, 'lead.role in ["flow", "vibration"]'),
        ({"lead_role": "current"}, 'lead.role == "current"'),
        ({"direction": {"flow": "down"}}, 'role.flow.direction == "down"'),
        (
            {"direction": {"pressure": ["steady", "absent"], "vibration": "up"}},
            'role.pressure.direction in ["steady", "absent"] && role.vibration.direction == "up"',
        ),
        ({"role": {"flow": {"below": -0.3}}}, "role.flow.contrib < -0.3"),
        (
            {"role": {"vibration": {"at_least": "k.joins", "below": 2}}},
            "role.vibration.contrib >= k.joins && role.vibration.contrib < 2.0",
        ),
        (  # the model has no speed signal: absent, contribution 0, in either
            {"role": {"speed": {"at_least": 0.0}, "flow": {"below": -0.3}}},
            "role.speed.contrib >= 0.0 && role.flow.contrib < -0.3",
        ),
        ({"moving": {"below": 2}}, "moving < 2"),
        (
            {"anomalous": True, "lead_role": "flow", "direction": {"flow": "down"}},
            'anomalous && lead.role == "flow" && role.flow.direction == "down"',
        ),
    ],
)
def test_a_role_guard_means_what_cel_means(guard: dict[str, Any], cel: str, tmp_path: Path) -> None:
    # One rule: the guard as its raise condition, the same test in CEL as its clear.
    data = yaml.safe_load(PAIR)
    data["rules"][0]["raise"] = {"guard": guard}
    data["rules"][0]["clear"] = cel
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump(data))
    rp = load_pack([path])
    assert check_pack(rp, SIGNALS, CLASSES, ROLES) == []
    rule, roles = rp.rules[0], Roles(SIGNALS, ROLES)
    rng = random.Random(11)
    seen = set()
    for _ in range(500):
        # At and around the cuts (0.3, 0.5), NaN, and signals the window lacks.
        values = [-1.5, -0.5, -0.3, -0.1, 0.0, 0.3, 0.5, 1.2, math.nan]
        contrib = {s: rng.choice(values) for s in SIGNALS if rng.random() > 0.15}
        r = window(T0, contrib)._replace(contrib=contrib)
        w = Window(r, CLASSES, {}, rp, Scope(rp.constants), roles)
        got = _outcome(rule.raise_when, w), _outcome(rule.clear_when, w)
        assert got[0] == got[1], (guard, cel, contrib)
        seen.add(got[0])
    assert {True, False} <= seen


def _outcome(cond: Condition, w: Window) -> object:
    try:
        return cond.holds(w)
    except RuleError:
        return "error"


def test_a_role_reads_its_strongest_signal_and_the_lead_its_role() -> None:
    r = window(T0, {"acc1": 0.6, "acc2": -0.9, "flow": 1.1})
    rp = learned_pack()
    w = Window(r, CLASSES, {}, rp, None, Roles(SIGNALS, ROLES))
    assert w.role("vibration") == {
        "signal": "acc2",
        "contrib": -0.9,
        "direction": "down",
        "change_pct": pytest.approx(-4.5),
        "mean": pytest.approx(0.27 * (1 - 0.045)),
        "baseline": 0.27,
    }
    assert w.role("pressure")["direction"] == "steady"
    assert w.role("speed") == {
        "signal": "",
        "contrib": 0.0,
        "direction": "absent",
        "change_pct": None,
        "mean": None,
        "baseline": None,
    }
    assert w.lead()["signal"] == "flow"
    assert w.lead()["role"] == "flow"
    assert w.lead()["direction"] == "up"
    assert w["moving"] == 3
    # Without roles (a classifier that states none) the lead still has its signal.
    plain = Window(r, CLASSES, {}, rp)
    assert plain.lead()["signal"] == "flow"
    assert plain.lead()["role"] == "?"
    assert plain.role("flow")["direction"] == "absent"


def test_roles_must_match_the_signals() -> None:
    with pytest.raises(ConfigError, match="7 roles for 8 signals"):
        advisor(roles=ROLES[:-1])
    with pytest.raises(ConfigError, match=r"'flow': 'flux' is not a role \(vibration, current"):
        advisor(roles=[*ROLES[:-1], "flux"])


def test_the_default_pack_takes_roles_too() -> None:
    # The simulator's classifier with roles stated: the same pack, roles in its messages.
    signals = ["temperature", "vibration", "current", "pressure", "flow"]
    classes = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
    classes += ["stuck_sensor", "drifting_sensor", "unknown"]
    pack = load_pack([])
    assert pack.model_kind == "classifier"
    assert check_pack(pack, signals, classes, signals) == []
    assert check_pack(pack, signals, classes) == []


# --- check_pack: roles and mechanisms -------------------------------------------------------

PACK = """\
pack: site
version: 0.1.0
model_kind: learned
needs_review: {when: "false", title: t, explanation: e, advice: a, due_within_h: 1}
rules:
  - id: suction
    fault: restricted_suction
    severity: warning
    raise:
      guard:
        anomalous: true
        lead_role: [flow, vibration]
        direction: {flow: down}
        role: {vibration: {at_least: 0.3}}
      cel: role.flow.contrib < -0.3
    clear: {guard: {ratio: {below: 0.7}}}
    title: "{lead.signal} ({lead.role}) {role.flow.change_pct:+.1f}%"
    explanation: e
    advice: a
    due_within_h: 24
    evidence: [role.flow.contrib, lead.role]
"""


def problems(tmp_path: Path, text: str, roles: list[str] | None = ROLES) -> list[Problem]:
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    try:
        pack = load_pack([path])
    except PackError as exc:
        return exc.problems
    return check_pack(pack, SIGNALS, CLASSES, roles)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_learned_pack_checks_against_a_learned_model() -> None:
    assert check_pack(learned_pack(), SIGNALS, CLASSES, ROLES) == []
    assert check_pack(learned_pack(), ["flow"], CLASSES, ["flow"]) == []
    assert learned_pack().model_kind == "learned"


def test_a_mechanism_is_a_fault_only_in_a_pack_for_learned_models(tmp_path: Path) -> None:
    assert problems(tmp_path, PACK) == []
    found = problems(tmp_path, PACK.replace("model_kind: learned\n", ""))
    assert [p.message for p in found] == [
        "rule suction: fault 'restricted_suction' is not a class of the model (normal, unknown)"
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "role: {vibration:",
            "role: {vibraton:",
            "role: {vibraton",
            (
                "rule suction: raise: guard: role.vibraton.contrib: no role 'vibraton' "
                "(vibration, current, voltage, pressure, flow, temperature, speed, other)"
            ),
        ),
        (
            "direction: {flow: down}",
            "direction: {flw: down}",
            "direction: {flw",
            "rule suction: raise: guard: role.flw.direction: no role 'flw'",
        ),
        (
            "direction: {flow: down}",
            "direction: {flow: [down, sideways]}",
            "direction: {flow",
            (
                "rule suction: raise: guard: role.flow.direction: no direction 'sideways' "
                "(up, down, steady, absent)"
            ),
        ),
        (
            "lead_role: [flow, vibration]",
            "lead_role: [flow, vibrations]",
            "lead_role",
            "rule suction: raise: guard: lead.role: no role 'vibrations'",
        ),
        (
            "cel: role.flow.contrib",
            "cel: role.flux.contrib",
            "cel: role.flux",
            "rule suction: raise: no key 'flux'",
        ),
        (
            "cel: role.flow.contrib",
            "cel: role.flow.contribution",
            "cel: role.flow",
            "rule suction: raise: no key 'contribution'",
        ),
        (
            "{role.flow.change_pct:+.1f}",
            "{role.pump.change_pct:+.1f}",
            'title: "',
            "rule suction: title: unknown placeholder {role.pump.change_pct}: no role 'pump'",
        ),
        (
            "{lead.role})",
            "{lead.rol})",
            'title: "',
            "rule suction: title: unknown placeholder {lead.rol}: no field 'rol' of the lead",
        ),
        (
            "[role.flow.contrib,",
            "[role.flow.contrb,",
            "evidence:",
            "rule suction: evidence 'role.flow.contrb' names no value",
        ),
    ],
)
def test_a_bad_role_is_a_pack_error_naming_rule_and_key(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    assert old in PACK
    bad = PACK.replace(old, new)
    found = problems(tmp_path, bad)
    assert found, message
    assert any(p.message.startswith(message) for p in found), found
    hit = next(p for p in found if p.message.startswith(message))
    assert hit.line == line_of(bad, needle)


def test_reading_roles_of_a_model_that_states_none_is_an_error(tmp_path: Path) -> None:
    found = problems(tmp_path, PACK, roles=None)
    messages = [p.message for p in found]
    for key in ("lead.role", "role.flow.direction", "role.vibration.contrib"):
        assert f"rule suction: raise: guard: {key}: the model states no roles for its signals" in (
            messages
        )
    assert "rule suction: raise: role: the model states no roles for its signals" in messages


def test_files_of_one_pack_state_one_model_kind(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("pack: site\nversion: 0.1.0\nmodel_kind: classifier\nrules: []\n")
    with pytest.raises(PackError, match=re.escape("model_kind classifier: the files disagree")):
        load_pack([default_pack_path("learned"), site])


def test_rules_check_reads_the_roles_of_a_learned_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx", reason="writing a learned model needs the `learn` extra")
    from edge_agent.models.learn.job import Output, fit_rows  # noqa: PLC0415 - needs onnx

    rng = np.random.default_rng(0)
    rows = np.array([BASE[s] for s in SIGNALS]) * (1 + 0.01 * rng.standard_normal((300, 8)))
    out = fit_rows(rows, SIGNALS, ROLES, tmp_path / "model", output=Output(tflite="off"))
    learned = str(default_pack_path("learned"))
    assert run_cli(["rules", "check", learned, "--manifest", str(out.manifest_path)]) == 0
    assert capsys.readouterr().out.startswith("ok: pack learned")
    # The shipped classifier states no roles: the learned pack cannot read them there.
    assert run_cli(["rules", "check", learned]) == 1
    assert "the model states no roles for its signals" in capsys.readouterr().err
