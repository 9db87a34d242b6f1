"""Checking a loaded rule pack against a model: signals, classes, constants, placeholders.

Loading (rules/pack.py) knows only the pack; this knows what the model offers, so the
same check runs in `edge-agent rules check`, at start and on every reload.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge_agent.daemon.readings import SignalStats
from edge_agent.rules import conditions
from edge_agent.rules.conditions import Condition
from edge_agent.rules.pack import Problem, RulePack, Where
from edge_agent.rules.templates import Template

# Values a template may name beyond the condition variables (see rules/engine.py).
_RULE_TEXT = frozenset({"fault", "prob", "severity", "due_within_h", "due", "lead"})
_REVIEW_TEXT = frozenset({"severity", "due_within_h", "due", "lead"})
_SCALARS = frozenset(
    {"asset", "score", "threshold", "ratio", "anomalous", "top_class", "top_prob"}
    | {"fault", "prob", "severity", "due_within_h", "due"}
)
_META = frozenset({"type", "criticality", "state"})
_LEAD = frozenset({"signal", "direction", "change_pct"})


def check_pack(pack: RulePack, signals: Sequence[str], classes: Sequence[str]) -> list[Problem]:
    """Check a loaded pack against a model: every signal, class, constant and placeholder."""
    known = _Known(frozenset(signals), frozenset(classes), frozenset(pack.constants))
    problems: list[Problem] = []

    def add(where: Where, name: str, prefix: str, messages: Sequence[str]) -> None:
        problems.extend(Problem(where.file, where.at(name), f"{prefix}{m}") for m in messages)

    for rule in pack.rules:
        w, pre = rule.where, f"rule {rule.id}: "
        if rule.fault not in known.classes:
            listed = ", ".join(classes)
            add(w, "fault", pre, [f"fault {rule.fault!r} is not a class of the model ({listed})"])
        conds = [("raise", rule.raise_when), ("clear", rule.clear_when)]
        conds += [("escalate", e.when) for e in rule.escalate]
        for name, cond in conds:
            add(w, name, f"{pre}{name}: ", known.condition(cond))
        for name, tmpl in (("title", rule.title), ("explanation", rule.explanation)):
            add(w, name, f"{pre}{name}: ", known.template(tmpl, _RULE_TEXT))
        add(w, "advice", f"{pre}advice: ", known.template(rule.advice, _RULE_TEXT))
        bad = [e for e in rule.evidence if not known.path(tuple(e.split(".")), frozenset())]
        add(w, "evidence", pre, [f"evidence {e!r} names no value" for e in bad])
    r = pack.review
    add(r.where, "when", "needs_review: when: ", known.condition(r.when))
    for name, tmpl in (("title", r.title), ("explanation", r.explanation), ("advice", r.advice)):
        add(r.where, name, f"needs_review: {name}: ", known.template(tmpl, _REVIEW_TEXT))
    return problems


@dataclass(frozen=True, slots=True)
class _Known:
    signals: frozenset[str]
    classes: frozenset[str]
    constants: frozenset[str]

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
            "lead": lambda r: "lead" in extra and len(r) == 1 and r[0] in _LEAD,
        }
        check = table.get(head)
        return check is not None and check(rest)

    def condition(self, cond: Condition) -> list[str]:
        out = [f"unknown variable {v!r}" for v in cond.unknown_variables()]
        bad = [ref for ref in cond.references() if not self.path(ref, frozenset())]
        return out + [f"{'.'.join(ref)}: {self._why(ref)}" for ref in bad]

    def template(self, tmpl: Template, extra: frozenset[str]) -> list[str]:
        return [
            f"unknown placeholder {{{p.name}}}: {self._why(p.path)}"
            for p in tmpl.placeholders
            if not self.path(p.path, extra)
        ]

    def _why(self, ref: tuple[str, ...]) -> str:
        head = ref[0]
        if head in ("stats", "contrib") and len(ref) > 1 and ref[1] not in self.signals:
            return f"the model has no signal {ref[1]!r} ({', '.join(sorted(self.signals))})"
        if head == "stats" and len(ref) > 2 and ref[2] not in _STAT_FIELDS:
            return f"no statistic {ref[2]!r} ({', '.join(_STAT_FIELDS)})"
        if head == "probs" and len(ref) > 1:
            return f"the model has no class {ref[1]!r} ({', '.join(sorted(self.classes))})"
        if head == "k" and len(ref) > 1:
            return f"no constant {ref[1]!r} in the pack's constants"
        return "names no value"


_STAT_FIELDS = SignalStats._fields
