"""Rule packs: the default pack loads and checks; every kind of error names file and line;
`edge-agent rules check` prints them and exits non-zero; templates cannot reach Python."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.core.errors import RuleError
from edge_agent.rules import cli, templates
from edge_agent.rules.check import check_pack
from edge_agent.rules.pack import PackError, Problem, default_pack_path, load_pack

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
CLASSES += ["stuck_sensor", "drifting_sensor", "unknown"]

GOOD = """\
pack: site
version: 1.2.0
constants: {limit: 4.5, zone_c: 2.8}
bands:
  zone:
    of: stats.vibration.mean
    edges: [zone_c, limit]
    labels: [ok, C, D]
flags:
  running: {guard: {stats: {current.mean: {at_least: 3.0}}}}
needs_review:
  when: anomalous && top_prob < 0.5
  title: "review {asset}"
  explanation: "led by {lead.signal}"
  advice: "look within {due}"
  due_within_h: 24
rules:
  - id: bearing
    fault: bearing_wear
    severity: warning
    raise:
      guard:
        flag: running
        probs: {bearing_wear: {at_least: 0.5}}
        stats: {vibration.mean: {at_least: k.limit}}
      cel: score > 0.5 && band.zone != "ok"
    clear: probs.bearing_wear < 0.2
    title: "bearing wear on {asset}"
    explanation: "vibration {stats.vibration.change_pct:+.0f}%, zone {band.zone}"
    advice: "inspect within {due}"
    due_within_h: 168
    evidence: [stats.vibration.mean]
"""


def write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def problems_of(tmp_path: Path, text: str) -> list[Problem]:
    path = write(tmp_path, text)
    try:
        pack = load_pack([path])
    except PackError as exc:
        return exc.problems
    return check_pack(pack, SIGNALS, CLASSES)


def test_default_pack_loads_and_checks_against_the_simulator_classes() -> None:
    pack = load_pack([])
    assert pack.files == (default_pack_path(),)
    assert check_pack(pack, SIGNALS, CLASSES) == []
    faults = {r.fault for r in pack.rules}
    assert faults == set(CLASSES) - {"normal", "unknown"}


def test_good_pack_loads(tmp_path: Path) -> None:
    assert problems_of(tmp_path, GOOD) == []


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "    severity: warning",
            "    severity: warning\n    sevrity: high",
            "sevrity",
            "unknown field 'sevrity'",
        ),
        ("version: 1.2.0", "version: 1.2.0\ncolour: red", "colour", "unknown field 'colour'"),
        ("> 0.5 &&", "> 0.5 &&&", "cel:", "raise.cel: does not compile"),
        ("vibration.mean: {", "speed.mean: {", "speed.mean", "the model has no signal 'speed'"),
        (
            "{bearing_wear: {at_least",
            "{bearing: {at_least",
            "probs: {bearing",
            "the model has no class 'bearing'",
        ),
        ("k.limit", "k.limmit", "k.limmit", "no constant 'limmit'"),
        ("fault: bearing_wear", "fault: bearing_war", "fault:", "not a class of the model"),
        (
            "{stats.vibration.change_pct:+.0f}",
            "{stats.vibration.chnge}",
            'explanation: "vib',
            "unknown placeholder {stats.vibration.chnge}",
        ),
        ("inspect within {due}", "inspect within {when}", "inspect", "unknown placeholder {when}"),
        ("review {asset}", "review {fault}", "review {", "unknown placeholder {fault}"),
        ("{lead.signal}", "{lead.signal.__class__}", "led by", "unknown placeholder"),
        (
            '{asset}"\n  explanation',
            '{asset.__class__.__mro__}"\n  explanation',
            "review {",
            "unknown placeholder",
        ),
        ('{due}"\n    due', '{due!r}"\n    due', "inspect", "is not a path"),
        (
            "[stats.vibration.mean]",
            "[stats.vibration.peak]",
            "evidence",
            "evidence 'stats.vibration.peak'",
        ),
        ("    severity: warning", "    severity: dire", "severity: dire", "'dire' is not one of"),
        ("when: anomalous", "when: anomalus", "when:", "unknown variable 'anomalus'"),
        (
            "cel: score",
            "cel: at_raise.stats.vibration.mean > 1.0 && score",
            "cel:",
            "in clear or escalate only",
        ),
        # Paths in CEL are checked by evaluating it on windows that have every value.
        (
            "clear: probs.bearing_wear < 0.2",
            "clear: probs.bearing_wear < 0.2 && at_raise.stats.speed.mean > 1.0",
            "clear:",
            "no key 'speed'",
        ),
        ("clear: probs.bearing_wear", "clear: probs.bearing", "clear:", "no key 'bearing'"),
        ("edges: [zone_c,", "edges: [zone_x,", "edges:", "no constant 'zone_x'"),
        ("[ok, C, D]", "[ok, C]", "labels:", "2 edges need 3 labels"),
        ("[zone_c, limit]", "[limit, zone_c]", "edges:", "edges: must ascend"),
        ("of: stats.vibration.mean", "of: stats.speed.mean", "of:", "no signal 'speed'"),
        ("{current.mean", "{curent.mean", "running:", "no signal 'curent'"),
        ("flag: running", "flag: runing", "flag: runing", "no flag 'runing'"),
        ("{band.zone}", "{band.zones}", 'explanation: "vib', "no band 'zones'"),
        (
            "    evidence:",
            "    inhibited_by: [nosuch]\n    evidence:",
            "inhibited_by",
            "no other rule 'nosuch'",
        ),
    ],
)
def test_each_error_names_file_line_and_cause(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    problems = problems_of(tmp_path, text)
    assert problems, f"no problem found for {new!r}"
    hit = [p for p in problems if message in p.message]
    assert hit, [str(p) for p in problems]
    assert hit[0].file == tmp_path / "pack.yaml"
    assert hit[0].line == line_of(text, needle)


def test_all_errors_of_a_stage_are_reported_not_just_the_first(tmp_path: Path) -> None:
    # Stages: the schema; then expressions and template syntax; then the model's names.
    text = GOOD.replace("> 0.5 &&", "> 0.5 &&&").replace('{due}"\n    due', '{x!r}"\n    due')
    text = text.replace("clear: probs.bearing_wear", "clear: probs.bearing_wear (")
    problems = problems_of(tmp_path, text)
    assert [p.line for p in problems] == sorted(
        {line_of(text, "cel:"), line_of(text, "clear:"), line_of(text, "inspect")}
    )
    text = GOOD.replace("vibration.mean: {", "speed.mean: {")
    text = text.replace('{due}"\n    due', '{x}"\n    due').replace(
        "fault: bearing_wear", "fault: x"
    )
    problems = problems_of(tmp_path, text)
    assert sorted(p.line for p in problems) == sorted(
        [line_of(text, "speed.mean"), line_of(text, "inspect"), line_of(text, "fault:")]
    )


def test_yaml_errors_debounce_and_duplicates(tmp_path: Path) -> None:
    bad_yaml = GOOD.replace("constants: {limit: 4.5,", "constants: {limit: 4.5")
    assert problems_of(tmp_path, bad_yaml)[0].line > 0
    debounce = GOOD.replace(
        "    severity: warning", "    severity: warning\n    debounce: {n: 5, m: 3}"
    )
    (p,) = problems_of(tmp_path, debounce)
    assert "n=5 is more than m=3" in p.message
    assert p.line == line_of(debounce, "debounce")
    a = write(tmp_path, GOOD, "a.yaml")
    b = write(tmp_path, GOOD.replace("pack: site", "pack: other"), "b.yaml")
    with pytest.raises(PackError) as err:
        load_pack([a, b])
    messages = [str(p) for p in err.value.problems]
    assert any("rule id 'bearing' already used at" in m and str(b) in m for m in messages)
    assert any("needs_review already set" in m for m in messages)


def test_two_files_make_one_pack(tmp_path: Path) -> None:
    a = write(tmp_path, GOOD, "a.yaml")
    rules = GOOD.split("rules:\n", maxsplit=1)[1].replace("id: bearing", "id: bearing-2")
    # A site file: its own rule; it may use the first file's flags, bands and constants.
    b = write(tmp_path, "pack: extra\nversion: 0.1.0\nrules:\n" + rules, "b.yaml")
    pack = load_pack([a, b])
    assert [r.id for r in pack.rules] == ["bearing", "bearing-2"]
    assert [r.pack_name for r in pack.rules] == ["site", "extra"]
    assert pack.name == "site+extra"
    assert check_pack(pack, SIGNALS, CLASSES) == []


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_rules_check_prints_every_error_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace("    severity: warning", "    severity: dire\n    colour: red")
    path = write(tmp_path, text)
    assert run_cli(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:{line_of(text, 'dire')}: rules.0.severity: 'dire'")
    assert err[1].startswith(f"{path}:{line_of(text, 'colour')}: rules.0: unknown field 'colour'")
    assert err[-1] == "2 problems found"
    path = write(tmp_path, GOOD.replace("> 0.5 &&", "> 0.5 &&&"))
    assert run_cli(["rules", "check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:{line_of(GOOD, 'cel:')}: rules.0.raise.cel: does not compile")


def test_templates_fill_numbers_and_refuse_python() -> None:
    t = templates.parse("{a.b:+.0f}% at {c:.1f} mm/s, {d:.0%} {{literal}} {e}")
    values = {"a": {"b": 180.4}, "c": 4.25, "d": 0.91, "e": "pump-3"}
    assert t.render(values) == "+180% at 4.2 mm/s, 91% {literal} pump-3"
    # Missing values render as `?` (the check refuses unknown paths before this happens).
    assert templates.parse("{nope}").render({}) == "?"
    for bad in ("{a[0]}", "{a!r}", "{a:>{width}}", "{a:x}", "{", "{a.__class__:.1d}"):
        with pytest.raises(RuleError):
            templates.parse(bad)
    # A dotted path only walks mappings: a str's attributes are out of reach.
    assert templates.parse("{e.upper}").render(values) == "?"
