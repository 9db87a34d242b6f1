"""Checking a loaded rule pack against a model: signals, classes, constants, placeholders.

Loading (rules/pack.py) knows only the pack; this knows what the model offers, so the
same check runs in `edge-agent rules check`, at start and on every reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.core.readings import SignalStats
from edge_agent.rules import conditions
from edge_agent.rules.conditions import Condition
from edge_agent.rules.pack import Problem, Rule, RulePack, Where
from edge_agent.rules.templates import Template

# Values a template may name beyond the condition variables (see rules/engine.py).
_RULE_TEXT = frozenset({"fault", "prob", "severity", "due_within_h", "due", "lead"})
_REVIEW_TEXT = frozenset({"severity", "due_within_h", "due", "lead"})
_SCALARS = frozenset(
    {"asset", "score", "threshold", "ratio", "anomalous", "top_class", "top_prob"}
    | {"fault", "prob", "severity", "due_within_h", "due"}
)
_META = frozenset({"type", "criticality", "state"})
_AT_RAISE = frozenset({"at_raise"})
_RAISED = frozenset({"stats", "contrib", "probs", "band", "flag", "score", "anomalous"})
_LEAD = frozenset({"signal", "direction", "change_pct"})


def check_pack(pack: RulePack, signals: Sequence[str], classes: Sequence[str]) -> list[Problem]:
    """Check a loaded pack against a model: every signal, class, constant and placeholder."""
    bands = frozenset(b.name for b in pack.bands)
    flags = frozenset(f.name for f in pack.flags)
    known = _Known(frozenset(signals), frozenset(classes), frozenset(pack.constants), bands, flags)
    problems: list[Problem] = []

    def add(where: Where, name: str, prefix: str, messages: Sequence[str]) -> None:
        problems.extend(Problem(where.file, where.at(name), f"{prefix}{m}") for m in messages)

    for band in pack.bands:
        if band.of[0] == "band" or not known.path(band.of, frozenset()):
            why = known.why(band.of)
            add(band.where, "of", f"bands.{band.name}: ", [f"of: {'.'.join(band.of)}: {why}"])
    for flag in pack.flags:
        messages = known.condition(flag.when)
        if any(ref[0] == "flag" for ref in flag.when.references()):
            messages.append("a flag cannot read other flags")
        add(flag.where, "", f"flags.{flag.name}: ", messages)
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
    add: Callable[[Where, str, str, Sequence[str]], None],
) -> None:
    w, pre = rule.where, f"rule {rule.id}: "
    unknown = [i for i in rule.inhibited_by if i not in ids or i == rule.id]
    add(w, "inhibited_by", pre, [f"inhibited_by: no other rule {i!r}" for i in unknown])
    if rule.fault not in known.classes:
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


@dataclass(frozen=True, slots=True)
class _Known:
    signals: frozenset[str]
    classes: frozenset[str]
    constants: frozenset[str]
    bands: frozenset[str]
    flags: frozenset[str]

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
            "lead": lambda r: "lead" in extra and len(r) == 1 and r[0] in _LEAD,
            # The values of the window that raised the rule, in clear and escalate conditions.
            "at_raise": lambda r: (
                "at_raise" in extra and bool(r) and r[0] in _RAISED and self.path(r, frozenset())
            ),
        }
        check = table.get(head)
        return check is not None and check(rest)

    def condition(self, cond: Condition, extra: frozenset[str] = frozenset()) -> list[str]:
        out = [f"unknown variable {v!r}" for v in cond.unknown_variables()]
        bad = [ref for ref in cond.references() if not self.path(ref, extra)]
        return out + [f"{'.'.join(ref)}: {self.why(ref)}" for ref in bad]

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
        if head in known and key:
            what, names = known[head]
            return f"{what} {key!r} ({', '.join(sorted(names))})"
        return "names no value"


_STAT_FIELDS = SignalStats._fields
