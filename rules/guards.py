"""Rule guards: the cheap part of a condition, as data that Python checks before any CEL.

A condition holds when its guard does and then its CEL part (rules/conditions.py). A guard
is a mapping of tests, every one of which must hold, each read straight from the window's
result (no values built, no CEL context):

    anomalous: true                              the score is past the threshold (false: not)
    flag: running                                flags of the pack that hold (name or list)
    probs: {cavitation: {at_least: k.p_fault}}   a class probability in a range
    ratio: {at_least: k.ratio_elevated}          score / threshold in a range
    stats: {temperature.mean: {below: 80.0}}     a window statistic (signal.field) in a range
    band: {vib_zone: [C, D]}                     a band's label is one of these
    lead_role: vibration                         the lead signal's role (a name or a list)
    direction: {flow: down, pressure: [steady, absent]}   a role's direction is one of these
    role: {flow: {below: -0.3}}                  a role's signed contribution in a range
    moving: {below: 2}                           how many signals move (up or down)

`direction`, `role` and `lead_role` read roles (rules/window.py): the strongest signal of
each role; a role the model lacks is `absent` with contribution 0 there, as in CEL.

A range is `at_least` (>=), `below` (<) or both, each a number or a constant `k.NAME` taken
from the constants of all the pack's files, as CEL reads `k`.

A test means what the same comparison means in CEL, errors included, so moving it from CEL
into the guard changes no outcome: a false test settles the guard (in CEL `false && e` is
false whatever `e` is); a value the window lacks (a missing signal) or cannot order (NaN:
CEL has no overload for it) is an error, which the guard reports only when no test is
false. Tests run cheapest and most selective first, which CEL's commutative `&&` allows.

Pack text never becomes code: it picks which of the small functions below runs, with which
names and numbers. The names are checked against the model and the pack by rules/check.py,
from `Test.reads`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from edge_agent.core.errors import RuleError
from edge_agent.core.readings import SignalStats
from edge_agent.rules.window import ratio

if TYPE_CHECKING:
    from edge_agent.rules.window import Window

Path = tuple[str, ...]
Check = Callable[["Window"], bool]
Get = Callable[["Window"], float]
# Guard keys in the order their tests run: the class probabilities settle a normal window.
KEYS = ("anomalous", "probs", "ratio", "flag", "lead", "moving", "role", "stats", "band")


@dataclass(frozen=True, slots=True)
class Test:
    """One test of a guard: what it reads (for `rules check`), where it is written, the check."""

    key: str  # the value tested, as a path: "probs.cavitation", "flag.running"
    reads: tuple[Path, ...]  # ("probs", "cavitation"), and ("k", "p_fault") for a bound
    line: int
    check: Check
    labels: tuple[str, ...] = ()  # what a band, direction or lead_role test accepts


class Guard:
    """A conjunction of tests; calling it settles one window (RuleError: none false, one failed)."""

    __slots__ = ("_checks", "tests")

    def __init__(self, tests: Sequence[Test]) -> None:
        self.tests = tuple(tests)
        self._checks = tuple((t.check, t.key) for t in self.tests)

    def __call__(self, w: Window) -> bool:
        """Whether every test holds for one window."""
        failed = ""
        for check, key in self._checks:
            try:
                if not check(w):
                    return False
            except (LookupError, ValueError) as exc:
                failed = failed or f"guard {key}: {type(exc).__name__}: {exc}"
        if failed:
            raise RuleError(failed)
        return True


def build_guard(
    raw: Mapping[str, Any], constants: Mapping[str, float], line: Callable[..., int]
) -> Guard:
    """A guard from its (schema-valid) mapping; `line(*keys)` gives where a key is written."""
    tests: list[Test] = []
    if "anomalous" in raw:
        path: Path = ("anomalous",)
        tests.append(Test("anomalous", (path,), line("anomalous"), _anomalous(raw["anomalous"])))
    for cls, bounds in raw.get("probs", {}).items():
        tests.append(_range(("probs", cls), _prob(cls), bounds, constants, line("probs", cls)))
    if "ratio" in raw:
        tests.append(_range(("ratio",), _ratio, raw["ratio"], constants, line("ratio")))
    flags = raw.get("flag", [])
    tests += (
        Test(f"flag.{name}", (("flag", name),), line("flag"), _flag(name))
        for name in ([flags] if isinstance(flags, str) else flags)
    )
    for key, bounds in raw.get("stats", {}).items():
        signal, _, stat = key.partition(".")
        path = ("stats", signal, stat)
        tests.append(_range(path, _stat(signal, stat), bounds, constants, line("stats", key)))
    for name, labels in raw.get("band", {}).items():
        allowed = (labels,) if isinstance(labels, str) else tuple(labels)
        check = _band(name, frozenset(allowed))
        tests.append(Test(f"band.{name}", (("band", name),), line("band", name), check, allowed))
    tests += _role_tests(raw, constants, line)
    order = {key: i for i, key in enumerate(KEYS)}
    return Guard(sorted(tests, key=lambda t: order[t.reads[0][0]]))


def _role_tests(
    raw: Mapping[str, Any], constants: Mapping[str, float], line: Callable[..., int]
) -> list[Test]:
    """The tests on roles: the lead's role, each role's direction and contribution, `moving`."""
    tests: list[Test] = []
    if "lead_role" in raw:
        want = _names(raw["lead_role"])
        check = _is_one_of(_lead_role, frozenset(want))
        tests.append(Test("lead.role", (("lead", "role"),), line("lead_role"), check, want))
    for role, labels in raw.get("direction", {}).items():
        want = _names(labels)
        check = _is_one_of(_role_direction(role), frozenset(want))
        path: Path = ("role", role, "direction")
        tests.append(Test(f"role.{role}.direction", (path,), line("direction", role), check, want))
    for role, bounds in raw.get("role", {}).items():
        where = line("role", role)
        tests.append(
            _range(("role", role, "contrib"), _role_contrib(role), bounds, constants, where)
        )
    if "moving" in raw:
        tests.append(_range(("moving",), _moving, raw["moving"], constants, line("moving")))
    return tests


def _names(raw: str | Sequence[str]) -> tuple[str, ...]:
    return (raw,) if isinstance(raw, str) else tuple(raw)


def _is_one_of(get: Callable[[Window], object], want: frozenset[str]) -> Check:
    return lambda w: get(w) in want


def _lead_role(w: Window) -> object:
    return w.lead()["role"]


def _role_direction(role: str) -> Callable[[Window], object]:
    return lambda w: w.role(role)["direction"]


def _role_contrib(role: str) -> Get:
    def get(w: Window) -> float:
        value = w.role(role)["contrib"]
        assert isinstance(value, float)
        return value

    return get


def _moving(w: Window) -> float:
    value = w["moving"]
    assert isinstance(value, int)
    return value


def _range(
    path: Path, get: Get, raw: Mapping[str, Any], constants: Mapping[str, float], line: int
) -> Test:
    """A test that `get` gives a number in [at_least, below)."""
    reads = [path]
    bounds: list[float | None] = []
    for name in ("at_least", "below"):
        bound = raw.get(name)
        if isinstance(bound, str):  # `k.NAME`, as the schema has it
            constant = bound.removeprefix("k.")
            reads.append(("k", constant))
            if constant not in constants:  # reported by rules check; an error if run anyway
                return Test(".".join(path), tuple(reads), line, _missing(bound))
            bound = constants[constant]
        bounds.append(bound)
    return Test(".".join(path), tuple(reads), line, _within(get, bounds[0], bounds[1]))


def _within(get: Get, lo: float | None, hi: float | None) -> Check:
    def check(w: Window) -> bool:
        value = get(w)
        if value != value:  # noqa: PLR0124 - NaN, which CEL cannot order either
            raise ValueError("NaN has no order")
        return (lo is None or value >= lo) and (hi is None or value < hi)

    return check


def _prob(cls: str) -> Get:
    # As the window's `probs` has it: a class the result does not name has probability 0.
    return lambda w: float(w.result.probs.get(cls, 0.0))


def _ratio(w: Window) -> float:
    return ratio(w.result)


def _stat(signal: str, stat: str) -> Get:
    if stat not in SignalStats._fields:
        return _missing(f"stats.{signal}.{stat}")
    i = SignalStats._fields.index(stat)
    return lambda w: w.result.stats[signal][i]  # KeyError for a missing signal, as in CEL


def _anomalous(want: bool) -> Check:
    return lambda w: bool(w.result.anomalous) is want


def _flag(name: str) -> Check:
    return lambda w: w.flags[name]


def _band(name: str, labels: frozenset[str]) -> Check:
    def check(w: Window) -> bool:
        bands = w["band"]
        assert isinstance(bands, dict)
        return bands[name] in labels

    return check


def _missing(name: str) -> Callable[[Window], NoReturn]:
    def fail(_w: Window) -> NoReturn:
        raise KeyError(name)

    return fail
