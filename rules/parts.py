"""What a loaded rule pack is made of: rules, the review policy, bands, flags, constants."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge_agent.rules.conditions import Condition
from edge_agent.rules.packfile import Where
from edge_agent.rules.templates import Template, lookup


class Severity(enum.IntEnum):
    """How urgent a recommendation is; a rule may escalate, never step down, while active."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        """The lower-case name used in packs and messages."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Debounce:
    """Fire when the condition held in at least `n` of the last `m` windows."""

    n: int
    m: int


@dataclass(frozen=True, slots=True)
class Escalation:
    """While a rule is active, raise its severity (and shorten the due time) when `when` holds."""

    when: Condition
    severity: Severity
    due_within_h: float | None


@dataclass(frozen=True, slots=True)
class Rule:
    """One fault rule: raise and clear conditions, debounce, cooldown and the advice texts."""

    id: str
    fault: str
    severity: Severity
    raise_when: Condition
    clear_when: Condition
    debounce: Debounce
    clear_debounce: Debounce
    cooldown_s: float
    escalate: tuple[Escalation, ...]
    title: Template
    explanation: Template
    advice: Template
    due_within_h: float
    evidence: tuple[str, ...]
    inhibited_by: tuple[str, ...]
    group: str | None  # rules of one group are one alarm: one open at a time per asset
    pack_name: str
    pack_version: str
    where: Where


@dataclass(frozen=True, slots=True)
class ReviewPolicy:
    """When to escalate an anomaly the model can't classify with confidence, and what to say."""

    when: Condition
    debounce: Debounce
    clear_windows: int
    cooldown_s: float
    severity: Severity
    title: Template
    explanation: Template
    advice: Template
    due_within_h: float
    pack_name: str
    pack_version: str
    where: Where


@dataclass(frozen=True, slots=True)
class Band:
    """A value sorted into labelled bands, e.g. vibration into ISO 10816 zones A-D."""

    name: str
    of: tuple[str, ...]  # path of the value, as in conditions: ("stats", "vibration", "mean")
    edges: tuple[float, ...]  # ascending; a value equal to an edge falls in the upper band
    labels: tuple[str, ...]  # one more than edges
    where: Where

    def label(self, values: Mapping[str, object]) -> str:
        """The band `values` falls in; "unknown" when the value is missing or not a number."""
        value = lookup(values, self.of)
        if not isinstance(value, int | float) or value != value:  # noqa: PLR0124 - NaN test
            return "unknown"
        return self.labels[bisect.bisect_right(self.edges, value)]


@dataclass(frozen=True, slots=True)
class Flag:
    """A named condition evaluated once per window before the rules (e.g. `running`)."""

    name: str
    when: Condition
    where: Where


@dataclass(frozen=True, slots=True)
class RulePack:
    """Every rule of the loaded files, the review policy and the constants they share."""

    name: str
    # `classifier`: rules name the model's fault classes; `learned`: a model with no fault
    # classes, whose rules name mechanisms and reason over signal roles.
    model_kind: str
    version: str
    rules: tuple[Rule, ...]
    review: ReviewPolicy
    constants: Mapping[str, float]
    bands: tuple[Band, ...]
    flags: tuple[Flag, ...]
    files: tuple[Path, ...]

    def conditions(self) -> list[Condition]:
        """Every condition: flags, rules (raise, clear, escalations), needs_review."""
        out = [f.when for f in self.flags]
        for rule in self.rules:
            out += [rule.raise_when, rule.clear_when, *(e.when for e in rule.escalate)]
        return [*out, self.review.when]

    def inhibitors(self) -> dict[str, tuple[str, ...]]:
        """Rule id -> the rules that, while open on an asset, keep it from raising.

        Its `inhibited_by`, and every other rule of its group (in pack order, so that in one
        window the first rule of a group that raises is the one that speaks).
        """
        return {
            r.id: (
                *r.inhibited_by,
                *(o.id for o in self.rules if r.group and o.group == r.group and o is not r),
            )
            for r in self.rules
        }
