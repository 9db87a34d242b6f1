"""Building one pack file's parts: conditions (guards and CEL), templates, bands, rules, review.

A `Builder` collects every problem of its file instead of stopping at the first, each with
the line of the key at fault; rules/pack.py combines the files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edge_agent.core.errors import RuleError
from edge_agent.rules import templates
from edge_agent.rules.conditions import Cel, Clause, Condition, compile_cel
from edge_agent.rules.guards import build_guard
from edge_agent.rules.packfile import PackFile, Problem, Where
from edge_agent.rules.parts import Band, Debounce, Escalation, ReviewPolicy, Rule, Severity
from edge_agent.rules.templates import Template

_TEXTS = ("title", "explanation", "advice")


class Builder:
    """Compiles the parts of one file; `constants` are those of the whole pack, for guards."""

    def __init__(
        self, item: PackFile, constants: Mapping[str, float], problems: list[Problem]
    ) -> None:
        self.item = item
        self.constants = constants
        self.problems = problems
        self.defaults: dict[str, Any] = item.data.get("defaults", {})

    def _line(self, *path: str | int) -> int:
        return self.item.lines.get(tuple(path), 0)

    def _problem(self, path: Sequence[str | int], message: str) -> None:
        self.problems.append(Problem(self.item.file, self._line(*path), message))

    def where(self, *path: str | int) -> Where:
        """Where the element at `path` is written, with the line of each of its fields."""
        raw = self._get(path)
        names = raw.keys() if isinstance(raw, dict) else ()
        return Where(self.item.file, self._line(*path), {n: self._line(*path, n) for n in names})

    def _get(self, path: Sequence[str | int]) -> object:
        node: object = self.item.data
        for key in path:
            node = node[key]  # type: ignore[index]
        return node

    def condition(self, raw: object, *path: str | int) -> Condition | None:
        """A condition: CEL text, a guard/cel mapping, or a list of them (one must hold)."""
        items = raw if isinstance(raw, list) else [raw]
        clauses: list[Clause] = []
        for j, item in enumerate(items):
            p = (*path, j) if isinstance(raw, list) else path
            if isinstance(item, str):
                cel = self._cel(item, *p)
                clauses += [Clause(None, cel)] if cel is not None else []
                continue
            guard = None
            if "guard" in item:
                guard = build_guard(item["guard"], self.constants, self._liner(*p, "guard"))
            cel = self._cel(item["cel"], *p, "cel") if "cel" in item else None
            if cel is not None or "cel" not in item:
                clauses.append(Clause(guard, cel))
        return Condition(tuple(clauses)) if len(clauses) == len(items) else None

    def _liner(self, *path: str | int) -> Callable[..., int]:
        return lambda *keys: self._line(*path, *keys)

    def _cel(self, source: str, *path: str | int) -> Cel | None:
        try:
            return compile_cel(source, self._line(*path))
        except RuleError as exc:
            self._problem(path, f"{'.'.join(map(str, path))}: {exc}")
            return None

    def _template(self, source: str, *path: str | int) -> Template | None:
        try:
            return templates.parse(source)
        except RuleError as exc:
            self._problem(path, f"{'.'.join(map(str, path))}: {exc}")
            return None

    def _texts(
        self, raw: Mapping[str, Any], *path: str | int
    ) -> tuple[Template, Template, Template] | None:
        title, explanation, advice = (self._template(raw[k], *path, k) for k in _TEXTS)
        if title is None or explanation is None or advice is None:
            return None
        return title, explanation, advice

    def _debounce(self, raw: Mapping[str, Any], key: str, *path: str | int) -> Debounce:
        value = raw.get(key, self.defaults.get(key, {"n": 1, "m": 1}))
        n, m = int(value["n"]), int(value["m"])
        if n > m:
            self._problem((*path, key), f"{key}: n={n} is more than m={m}")
        return Debounce(n, m)

    def _cooldown_s(self, raw: Mapping[str, Any]) -> float:
        return float(raw.get("cooldown_h", self.defaults.get("cooldown_h", 0.0))) * 3600.0

    def band(
        self, name: str, raw: Mapping[str, Any], constants: Mapping[str, float]
    ) -> Band | None:
        """Build one band; edges may name constants. None (with problems noted) if invalid."""
        p = ("bands", name)
        edges: list[float] = []
        for j, edge in enumerate(raw["edges"]):
            if isinstance(edge, str):
                if edge not in constants:
                    self._problem((*p, "edges", j), f"bands.{name}.edges: no constant {edge!r}")
                    return None
                edges.append(float(constants[edge]))
            else:
                edges.append(float(edge))
        labels = tuple(str(x) for x in raw["labels"])
        if edges != sorted(edges):
            self._problem((*p, "edges"), f"bands.{name}.edges: must ascend, got {edges}")
            return None
        if len(labels) != len(edges) + 1:
            message = f"bands.{name}.labels: {len(edges)} edges need {len(edges) + 1} labels"
            self._problem((*p, "labels"), message)
            return None
        return Band(name, tuple(raw["of"].split(".")), tuple(edges), labels, self.where(*p))

    def rule(self, i: int, raw: Mapping[str, Any]) -> Rule | None:
        """Build rule number `i`, or None (with problems noted) when a part does not compile."""
        p = ("rules", i)
        raise_when = self.condition(raw["raise"], *p, "raise")
        clear_when = self.condition(raw["clear"], *p, "clear")
        texts = self._texts(raw, *p)
        escalate: list[Escalation] = []
        for j, esc in enumerate(raw.get("escalate", [])):
            cond = self.condition(esc["when"], *p, "escalate", j, "when")
            if cond is not None:
                due = esc.get("due_within_h")
                escalate.append(Escalation(cond, Severity[esc["severity"].upper()], due))
        debounce = self._debounce(raw, "debounce", *p)
        clear_debounce = self._debounce(raw, "clear_debounce", *p)
        if raise_when is None or clear_when is None or texts is None:
            return None
        title, explanation, advice = texts
        return Rule(
            id=raw["id"],
            fault=raw["fault"],
            severity=Severity[raw["severity"].upper()],
            raise_when=raise_when,
            clear_when=clear_when,
            debounce=debounce,
            clear_debounce=clear_debounce,
            cooldown_s=self._cooldown_s(raw),
            escalate=tuple(escalate),
            title=title,
            explanation=explanation,
            advice=advice,
            due_within_h=float(raw["due_within_h"]),
            evidence=tuple(raw.get("evidence", ())),
            inhibited_by=tuple(raw.get("inhibited_by", ())),
            group=raw.get("group", self.defaults.get("group")),
            pack_name=str(self.item.data["pack"]),
            pack_version=str(self.item.data["version"]),
            where=self.where(*p),
        )

    def review(self, raw: Mapping[str, Any]) -> ReviewPolicy | None:
        """Build the needs_review policy, or None (with problems noted)."""
        p = ("needs_review",)
        when = self.condition(raw["when"], *p, "when")
        texts = self._texts(raw, *p)
        debounce = self._debounce(raw, "debounce", *p)
        if when is None or texts is None:
            return None
        title, explanation, advice = texts
        return ReviewPolicy(
            when=when,
            debounce=debounce,
            clear_windows=int(raw.get("clear_windows", 6)),
            cooldown_s=self._cooldown_s(raw),
            severity=Severity[raw.get("severity", "warning").upper()],
            title=title,
            explanation=explanation,
            advice=advice,
            due_within_h=float(raw["due_within_h"]),
            pack_name=str(self.item.data["pack"]),
            pack_version=str(self.item.data["version"]),
            where=self.where(*p),
        )
