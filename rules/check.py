"""Checking a loaded rule pack against a model: signals, classes, constants, placeholders.

Loading (rules/pack.py) knows only the pack; this knows what the model offers, so the
same check runs in `edge-agent rules check`, at start and on every reload.

What a guard reads is data (`Test.reads`), checked name by name: a guard naming a class,
signal, statistic, constant, band, label or flag that does not exist is an error at the
key's line. A CEL part is checked with the library alone, which exposes no paths: its
top-level names (`Program.variables()`), and one trial evaluation on a window that has
every value the model and the pack name (`_probe`), so a misspelt key or a comparison of
unlike types fails here rather than on every window. The trial follows CEL's short-circuits,
so it proves what it reaches; names worth checking for certain belong in the guard.

A pack for learned models (`model_kind: learned`) names mechanisms, not model classes, as
its rules' `fault`: those are not checked against the classes. Role names (`role.<role>`,
`direction`, `lead_role`) are checked against the role vocabulary, and reading roles at all
against a model that states none is an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.core.readings import SignalStats
from edge_agent.rules import conditions
from edge_agent.rules.celrt import cel
from edge_agent.rules.conditions import Cel, Condition
from edge_agent.rules.guards import Guard
from edge_agent.rules.pack import Problem, Rule, RulePack, Where
from edge_agent.rules.templates import Template
from edge_agent.rules.window import DIRECTIONS, LEAD_FIELDS, RAISED, ROLE_FIELDS, ROLES

# A message at a line of its own (a guard's key), or at the line of the field (None).
Found = tuple[int | None, str]

# Values a template may name beyond the condition variables (see rules/engine.py).
_RULE_TEXT = frozenset({"fault", "prob", "severity", "due_within_h", "due", "lead"})
_REVIEW_TEXT = frozenset({"severity", "due_within_h", "due", "lead"})
_SCALARS = frozenset(
    {"asset", "score", "threshold", "ratio", "anomalous", "top_class", "top_prob", "moving"}
    | {"fault", "prob", "severity", "due_within_h", "due"}
)
_META = frozenset({"type", "criticality", "state"})
_AT_RAISE = frozenset({"at_raise"})
_RAISED = frozenset(RAISED)
_NO_ROLES = "the model states no roles for its signals"


def check_pack(
    pack: RulePack,
    signals: Sequence[str],
    classes: Sequence[str],
    roles: Sequence[str] | None = None,
) -> list[Problem]:
    """Check a loaded pack against a model: every signal, class, role, constant, placeholder.

    `roles` are the model's signal roles (None: it states none).
    """
    bands = {b.name: b.labels for b in pack.bands}
    flags = frozenset(f.name for f in pack.flags)
    known = _Known(frozenset(signals), tuple(classes), pack.constants, bands, flags)
    known.has_roles = roles is not None
    known.learned = pack.model_kind == "learned"
    problems: list[Problem] = []

    def add(where: Where, name: str, prefix: str, found: Sequence[Found | str]) -> None:
        for item in found:
            line, message = (None, item) if isinstance(item, str) else item
            problems.append(Problem(where.file, line or where.at(name), f"{prefix}{message}"))

    for band in pack.bands:
        if band.of[0] == "band" or not known.path(band.of, frozenset()):
            why = known.why(band.of)
            add(band.where, "of", f"bands.{band.name}: ", [f"of: {'.'.join(band.of)}: {why}"])
    for flag in pack.flags:
        found = known.condition(flag.when)
        if "flag" in _reads(flag.when):
            found.append((None, "a flag cannot read other flags"))
        add(flag.where, "", f"flags.{flag.name}: ", found)
    ids = {r.id for r in pack.rules}
    for rule in pack.rules:
        _check_rule(rule, ids, known, add)
    r = pack.review
    add(r.where, "when", "needs_review: when: ", known.condition(r.when))
    for name, tmpl in (("title", r.title), ("explanation", r.explanation), ("advice", r.advice)):
        add(r.where, name, f"needs_review: {name}: ", known.template(tmpl, _REVIEW_TEXT))
    return problems


def _check_rule(
    rule: Rule,
    ids: set[str],
    known: _Known,
    add: Callable[[Where, str, str, Sequence[Found | str]], None],
) -> None:
    w, pre = rule.where, f"rule {rule.id}: "
    unknown = [i for i in rule.inhibited_by if i not in ids or i == rule.id]
    add(w, "inhibited_by", pre, [f"inhibited_by: no other rule {i!r}" for i in unknown])
    if rule.fault not in known.classes and not known.learned:
        listed = ", ".join(sorted(known.classes))
        add(w, "fault", pre, [f"fault {rule.fault!r} is not a class of the model ({listed})"])
    add(w, "raise", f"{pre}raise: ", known.condition(rule.raise_when))
    conds = [("clear", rule.clear_when), *(("escalate", e.when) for e in rule.escalate)]
    for name, cond in conds:
        add(w, name, f"{pre}{name}: ", known.condition(cond, _AT_RAISE))
    for name, tmpl in (("title", rule.title), ("explanation", rule.explanation)):
        add(w, name, f"{pre}{name}: ", known.template(tmpl, _RULE_TEXT))
    add(w, "advice", f"{pre}advice: ", known.template(rule.advice, _RULE_TEXT))
    bad = [e for e in rule.evidence if not known.path(tuple(e.split(".")), frozenset())]
    add(w, "evidence", pre, [f"evidence {e!r} names no value" for e in bad])


def _reads(cond: Condition) -> set[str]:
    """The roots a condition reads: its guards' and its CEL parts' top-level names."""
    roots = {path[0] for g in cond.guards() for t in g.tests for path in t.reads}
    return roots | {name for part in cond.cel_parts() for name in part.program.variables()}


@dataclass(slots=True)
class _Known:
    signals: frozenset[str]
    classes: tuple[str, ...]
    constants: Mapping[str, float]
    bands: Mapping[str, tuple[str, ...]]
    flags: frozenset[str]
    has_roles: bool = False
    learned: bool = False
    _probes: tuple[cel.Context, ...] = ()

    def path(self, path: tuple[str, ...], extra: frozenset[str]) -> bool:
        head, rest = path[0], path[1:]
        if head in _SCALARS:
            return not rest and (head in conditions.VARIABLES or head in extra)
        table: dict[str, Callable[[tuple[str, ...]], bool]] = {
            "contrib": lambda r: len(r) == 1 and r[0] in self.signals,
            "probs": lambda r: len(r) == 1 and r[0] in self.classes,
            "stats": lambda r: len(r) == 2 and r[0] in self.signals and r[1] in _STAT_FIELDS,
            "meta": lambda r: len(r) == 1 and r[0] in _META,
            "k": lambda r: len(r) == 1 and r[0] in self.constants,
            "band": lambda r: len(r) == 1 and r[0] in self.bands,
            "flag": lambda r: len(r) == 1 and r[0] in self.flags,
            "lead": lambda r: len(r) == 1 and r[0] in LEAD_FIELDS and self.roles_ok(r[0]),
            "role": lambda r: (
                self.has_roles
                and 1 <= len(r) <= 2
                and r[0] in ROLES
                and (len(r) == 1 or r[1] in ROLE_FIELDS)
            ),
            # The values of the window that raised the rule, in clear and escalate conditions.
            "at_raise": lambda r: (
                "at_raise" in extra and bool(r) and r[0] in _RAISED and self.path(r, frozenset())
            ),
        }
        check = table.get(head)
        return check is not None and check(rest)

    def roles_ok(self, field: str) -> bool:
        """Whether `lead.<field>` can be read: its role only where the model states roles."""
        return field != "role" or self.has_roles

    def condition(self, cond: Condition, extra: frozenset[str] = frozenset()) -> list[Found]:
        out = [found for guard in cond.guards() for found in self.guard(guard)]
        for part in cond.cel_parts():
            out += [(part.line or None, message) for message in self.cel_part(part, extra)]
        return out

    def guard(self, guard: Guard) -> list[Found]:
        out: list[Found] = []
        for test in guard.tests:
            for i, path in enumerate(test.reads):
                if not self.path(path, frozenset()):
                    bound = f"{'.'.join(path)}: " if i else ""  # a constant the range names
                    out.append((test.line, f"guard: {test.key}: {bound}{self.why(path)}"))
            what, allowed = self.labels(test.reads[0]) if test.labels else ("", None)
            if allowed is not None and (odd := [x for x in test.labels if x not in allowed]):
                listed = ", ".join(allowed)
                out += [(test.line, f"guard: {test.key}: no {what} {x!r} ({listed})") for x in odd]
        return out

    def labels(self, path: tuple[str, ...]) -> tuple[str, Sequence[str] | None]:
        """What a test of labels at `path` names, and the names it may use (None: unknown)."""
        if path[0] == "band":
            return "label", self.bands.get(path[1])
        return ("role", ROLES) if path[0] == "lead" else ("direction", DIRECTIONS)

    def cel_part(self, part: Cel, extra: frozenset[str]) -> list[str]:
        names = part.program.variables()
        out = [
            f"at_raise: {self.why(('at_raise',))}"
            for name in names
            if name == "at_raise" and name not in extra
        ]
        out += [f"role: {_NO_ROLES}" for name in names if name == "role" and not self.has_roles]
        asked: set[str] = set()
        failures: list[str] = []
        for probe in self.probes():
            looked_up, failure = _try(part, probe)
            asked |= looked_up
            failures += [failure] if failure and failure not in failures else []
        # A name CEL looked up is free; one it did not was bound by a macro (`exists(s, ..)`).
        unknown = [n for n in names if n not in conditions.VARIABLES and n in asked]
        out += [f"unknown variable {n!r}" for n in unknown]
        return out if unknown else out + failures

    def probes(self) -> tuple[cel.Context, ...]:
        """Two windows with every value the model and the pack name: all high, all low.

        Between them they pass most comparisons either way, so that CEL's short-circuits
        leave little of an expression untried.
        """
        if not self._probes:
            self._probes = (self._probe(_HIGH, top=True), self._probe(_LOW, top=False))
        return self._probes

    def _probe(self, stat: Mapping[str, float], *, top: bool) -> cel.Context:
        window: dict[str, object] = {
            "asset": "probe",
            "score": stat["mean"],
            "threshold": 1.0,
            "ratio": stat["mean"],
            "anomalous": top,
            "contrib": dict.fromkeys(self.signals, stat["change_pct"] / 100),
            "probs": dict.fromkeys(self.classes, float(top)),
            "stats": {s: dict(stat) for s in self.signals},
            "top_class": self.classes[0] if self.classes else "unknown",
            "top_prob": float(top),
            "meta": dict.fromkeys(_META, "probe"),
            "k": dict(self.constants),
            "band": {name: labels[-1 if top else 0] for name, labels in self.bands.items()},
            "flag": dict.fromkeys(self.flags, top),
            "moving": len(self.signals) if top else 0,
        }
        side = stat["change_pct"] / 100
        one = {
            "signal": "probe",
            "contrib": side,
            "direction": "up" if top else "down",
            "change_pct": stat["change_pct"],
            "mean": stat["mean"],
            "baseline": stat["baseline"],
        }
        window["role"] = {role: dict(one) for role in ROLES}
        window["lead"] = one | {"role": ROLES[0]}
        window["at_raise"] = {root: window[root] for root in RAISED}
        return cel.Context(window)

    def template(self, tmpl: Template, extra: frozenset[str]) -> list[str]:
        return [
            f"unknown placeholder {{{p.name}}}: {self.why(p.path)}"
            for p in tmpl.placeholders
            if not self.path(p.path, extra)
        ]

    def why(self, ref: tuple[str, ...]) -> str:
        head, key = ref[0], ref[1] if len(ref) > 1 else ""
        if head == "stats" and len(ref) > 2 and key in self.signals:
            return f"no statistic {ref[2]!r} ({', '.join(_STAT_FIELDS)})"
        known = {
            "stats": ("the model has no signal", self.signals),
            "contrib": ("the model has no signal", self.signals),
            "probs": ("the model has no class", self.classes),
            "k": ("the pack has no constant", self.constants),
            "band": ("the pack has no band", self.bands),
            "flag": ("the pack has no flag", self.flags),
        }
        if head == "at_raise":
            return "at_raise names a value of the raising window, in clear or escalate only"
        if head in ("role", "lead"):
            return self._why_role(ref)
        if head in known and key:
            what, names = known[head]
            return f"{what} {key!r} ({', '.join(sorted(names))})"
        return "names no value"

    def _why_role(self, ref: tuple[str, ...]) -> str:
        head, key = ref[0], ref[1] if len(ref) > 1 else ""
        if (head == "role" or key == "role") and not self.has_roles:
            return _NO_ROLES
        if head == "lead":
            return f"no field {key!r} of the lead ({', '.join(LEAD_FIELDS)})"
        if key not in ROLES:
            return f"no role {key!r} ({', '.join(ROLES)})"
        field = ref[2] if len(ref) > 2 else ""
        return f"no field {field!r} of a role ({', '.join(ROLE_FIELDS)})"


def _try(part: Cel, probe: cel.Context) -> tuple[set[str], str]:
    """Evaluate once: the names CEL looked up, and what is wrong ("" where nothing is).

    Only what no value of a real window could mend is wrong: a missing key, unlike types, a
    result that is not a boolean. Arithmetic on the trial numbers (`int(x) / int(y)` on the
    low window) proves nothing.
    """
    asked: set[str] = set()

    def ask(name: str) -> None:
        asked.add(name)  # and None: CEL takes the value from the context, if it is there

    probe.set_variable_resolver(ask)
    try:
        result = part.program.execute(probe)
    except LookupError as exc:
        key = exc.args[0] if exc.args else exc
        return asked, f"no key {key!r} in a window that has every value of the model and pack"
    except TypeError as exc:
        return asked, f"fails on a window that has every value of the model and pack: {exc}"
    except (ArithmeticError, ValueError, RuntimeError):
        return asked, ""
    return asked, "" if isinstance(result, bool) else f"gives {result!r}, not true or false"


_STAT_FIELDS = SignalStats._fields
_HIGH = dict(zip(_STAT_FIELDS, (1000.0, 1001.0, 900.0, 1100.0, 10.0, 950.0, 100.0), strict=True))
_LOW = dict(zip(_STAT_FIELDS, (0.001, 0.0011, 0.0005, 0.0015, -10.0, 0.0009, -100.0), strict=True))
