"""Rule packs: YAML files checked against a JSON Schema, compiled once, with file:line errors.

A pack names itself and its version, sets constants (zone limits, ...) and defaults, and
holds one rule per fault class plus the `needs_review` policy for anomalies the model cannot
classify. Several files may be loaded together; rule ids must be unique across them.
"""

from __future__ import annotations

import bisect
import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from edge_agent.core.errors import RuleError
from edge_agent.rules import templates
from edge_agent.rules.conditions import Condition, compile_condition
from edge_agent.rules.templates import Template

DEFAULT_PACK = "default.yaml"
PACK_SCHEMA = "rule-pack-v1.schema.json"

Path_ = tuple[str | int, ...]


class Severity(enum.IntEnum):
    """How urgent a recommendation is; a rule may escalate, never step down, while active."""

    INFO = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        """The lower-case name used in packs and messages."""
        return self.name.lower()


class Problem(NamedTuple):
    """One thing wrong with a pack, where it is."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class PackError(RuleError):
    """A pack failed to load or to check; `problems` lists every one with file and line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


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
class Where:
    """Where a pack element was written, for messages: file and the line of each field."""

    file: Path
    line: int
    fields: Mapping[str, int] = field(default_factory=dict)

    def at(self, name: str) -> int:
        """Line of one field (the element's own line if unknown)."""
        return self.fields.get(name, self.line)


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
        node: object = values
        for key in self.of:
            if not isinstance(node, Mapping) or key not in node:
                return "unknown"
            node = node[key]
        if not isinstance(node, int | float) or node != node:  # noqa: PLR0124 - NaN test
            return "unknown"
        return self.labels[bisect.bisect_right(self.edges, node)]


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
    version: str
    rules: tuple[Rule, ...]
    review: ReviewPolicy
    constants: Mapping[str, float]
    bands: tuple[Band, ...]
    flags: tuple[Flag, ...]
    files: tuple[Path, ...]


def default_pack_path() -> Path:
    """The pack shipped with the agent."""
    return Path(str(resources.files("edge_agent.rules") / "packs" / DEFAULT_PACK))


def pack_schema() -> dict[str, Any]:
    """The JSON Schema of the pack format."""
    text = (resources.files("edge_agent.rules") / "schemas" / PACK_SCHEMA).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_pack(paths: Sequence[Path]) -> RulePack:
    """Load and compile rule packs (none: the packaged default); PackError lists every problem."""
    files = tuple(paths) or (default_pack_path(),)
    problems: list[Problem] = []
    loaded: list[_Loaded] = []
    for path in files:
        try:
            loaded.append(_load_file(path))
        except PackError as exc:
            problems += exc.problems
    if problems:
        raise PackError(problems)
    return _combine(loaded)


class _Loaded(NamedTuple):
    file: Path
    data: dict[str, Any]
    lines: dict[Path_, int]


def _load_file(path: Path) -> _Loaded:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError([Problem(path, 0, f"cannot be read: {exc}")]) from exc
    loader = yaml.SafeLoader(text)
    lines: dict[Path_, int] = {}
    try:
        node = loader.get_single_node()
        data = _plain(loader, node, (), lines) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise PackError([Problem(path, line, f"not valid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise PackError([Problem(path, 1, "a rule pack is a YAML mapping")])
    validator = jsonschema.Draft202012Validator(pack_schema())
    problems = [
        Problem(path, line, message)
        for error in validator.iter_errors(data)
        for line, message in _describe(error, lines)
    ]
    if problems:
        raise PackError(sorted(problems, key=lambda p: p.line))
    return _Loaded(path, data, lines)


def _plain(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int]
) -> object:
    """Build plain data from a composed YAML node, noting the line of every path."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            key = str(loader.construct_object(key_node))
            out[key] = _plain(loader, value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(loader, v, (*path, i), lines) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _describe(
    error: jsonschema.ValidationError, lines: dict[Path_, int]
) -> Iterator[tuple[int, str]]:
    path: Path_ = tuple(error.absolute_path)
    where = ".".join(str(p) for p in path) or "pack"
    schema = error.schema
    instance = error.instance
    if (
        error.validator == "additionalProperties"
        and isinstance(schema, Mapping)
        and isinstance(instance, dict)
    ):
        allowed = set(schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                yield lines.get((*path, key), 0), f"{where}: unknown field {key!r} (known: {known})"
        return
    line = lines.get(path, 0)
    while not line and path:
        path = path[:-1]
        line = lines.get(path, 0)
    yield line, f"{where}: {error.message}"


def _combine(loaded: Sequence[_Loaded]) -> RulePack:
    problems: list[Problem] = []
    rules: dict[str, Rule] = {}
    constants: dict[str, float] = {}
    bands: dict[str, Band] = {}
    flags: dict[str, Flag] = {}
    review: ReviewPolicy | None = None
    for item in loaded:
        build = _Builder(item, problems)
        constants.update(item.data.get("constants", {}))
        # A later file may redefine a band or a flag (a site pack with other zone limits).
        for name, raw in item.data.get("bands", {}).items():
            if (band := build.band(name, raw, constants)) is not None:
                bands[name] = band
        for name, raw in item.data.get("flags", {}).items():
            if (cond := build.compile(raw, "flags", name)) is not None:
                flags[name] = Flag(name, cond, build.where("flags", name))
        _add_rules(build, rules, problems)
        if "needs_review" in item.data:
            if review is not None:
                line = item.lines.get(("needs_review",), 0)
                message = f"needs_review already set in {review.where.file}"
                problems.append(Problem(item.file, line, message))
            else:
                review = build.review(item.data["needs_review"])
    if review is None and not problems:
        problems.append(Problem(loaded[0].file, 1, "no file of the pack sets needs_review"))
    if problems:
        raise PackError(problems)
    assert review is not None
    return RulePack(
        name="+".join(str(i.data["pack"]) for i in loaded),
        version="+".join(str(i.data["version"]) for i in loaded),
        rules=tuple(rules.values()),
        review=review,
        constants=constants,
        bands=tuple(bands.values()),
        flags=tuple(flags.values()),
        files=tuple(i.file for i in loaded),
    )


def _add_rules(build: _Builder, rules: dict[str, Rule], problems: list[Problem]) -> None:
    for i, raw in enumerate(build.item.data["rules"]):
        rule = build.rule(i, raw)
        if rule is None:
            continue
        first = rules.get(rule.id)
        if first is not None:
            where = f"{first.where.file}:{first.where.line}"
            message = f"rule id {rule.id!r} already used at {where}"
            problems.append(Problem(build.item.file, rule.where.line, message))
            continue
        rules[rule.id] = rule


class _Builder:
    """Compiles the parts of one file, collecting problems instead of stopping at the first."""

    def __init__(self, item: _Loaded, problems: list[Problem]) -> None:
        self.item = item
        self.problems = problems
        self.defaults: dict[str, Any] = item.data.get("defaults", {})

    def _line(self, *path: str | int) -> int:
        return self.item.lines.get(tuple(path), 0)

    def where(self, *path: str | int) -> Where:
        raw = self._get(path)
        names = raw.keys() if isinstance(raw, dict) else ()
        return Where(self.item.file, self._line(*path), {n: self._line(*path, n) for n in names})

    def _get(self, path: Sequence[str | int]) -> object:
        node: object = self.item.data
        for key in path:
            node = node[key]  # type: ignore[index]
        return node

    def compile(self, source: str, *path: str | int) -> Condition | None:
        try:
            return compile_condition(source)
        except RuleError as exc:
            self.problems.append(
                Problem(self.item.file, self._line(*path), f"{'.'.join(map(str, path))}: {exc}")
            )
            return None

    def _template(self, source: str, *path: str | int) -> Template | None:
        try:
            return templates.parse(source)
        except RuleError as exc:
            self.problems.append(
                Problem(self.item.file, self._line(*path), f"{'.'.join(map(str, path))}: {exc}")
            )
            return None

    def _debounce(self, raw: Mapping[str, Any], key: str, *path: str | int) -> Debounce:
        value = raw.get(key, self.defaults.get(key, {"n": 1, "m": 1}))
        n, m = int(value["n"]), int(value["m"])
        if n > m:
            self.problems.append(
                Problem(self.item.file, self._line(*path, key), f"{key}: n={n} is more than m={m}")
            )
        return Debounce(n, m)

    def band(
        self, name: str, raw: Mapping[str, Any], constants: Mapping[str, float]
    ) -> Band | None:
        """Build one band; edges may name constants. None (with problems noted) if invalid."""
        p = ("bands", name)
        edges: list[float] = []
        for j, edge in enumerate(raw["edges"]):
            if isinstance(edge, str):
                if edge not in constants:
                    self.problems.append(
                        Problem(
                            self.item.file,
                            self._line(*p, "edges", j),
                            f"bands.{name}.edges: no constant {edge!r}",
                        )
                    )
                    return None
                edges.append(float(constants[edge]))
            else:
                edges.append(float(edge))
        labels = tuple(str(x) for x in raw["labels"])
        if edges != sorted(edges):
            message = f"bands.{name}.edges: must ascend, got {edges}"
            self.problems.append(Problem(self.item.file, self._line(*p, "edges"), message))
            return None
        if len(labels) != len(edges) + 1:
            message = f"bands.{name}.labels: {len(edges)} edges need {len(edges) + 1} labels"
            self.problems.append(Problem(self.item.file, self._line(*p, "labels"), message))
            return None
        return Band(name, tuple(raw["of"].split(".")), tuple(edges), labels, self.where(*p))

    def rule(self, i: int, raw: Mapping[str, Any]) -> Rule | None:
        """Build rule number `i`, or None (with problems noted) when a part does not compile."""
        p = ("rules", i)
        raise_when = self.compile(raw["raise"], *p, "raise")
        clear_when = self.compile(raw["clear"], *p, "clear")
        texts = {k: self._template(raw[k], *p, k) for k in ("title", "explanation", "advice")}
        escalate: list[Escalation] = []
        for j, esc in enumerate(raw.get("escalate", [])):
            cond = self.compile(esc["when"], *p, "escalate", j, "when")
            if cond is not None:
                due = esc.get("due_within_h")
                escalate.append(Escalation(cond, Severity[esc["severity"].upper()], due))
        debounce = self._debounce(raw, "debounce", *p)
        clear_debounce = self._debounce(raw, "clear_debounce", *p)
        title, explanation, advice = texts["title"], texts["explanation"], texts["advice"]
        if (
            raise_when is None
            or clear_when is None
            or title is None
            or explanation is None
            or advice is None
        ):
            return None
        data = self.item.data
        return Rule(
            id=raw["id"],
            fault=raw["fault"],
            severity=Severity[raw["severity"].upper()],
            raise_when=raise_when,
            clear_when=clear_when,
            debounce=debounce,
            clear_debounce=clear_debounce,
            cooldown_s=float(raw.get("cooldown_h", self.defaults.get("cooldown_h", 0.0))) * 3600.0,
            escalate=tuple(escalate),
            title=title,
            explanation=explanation,
            advice=advice,
            due_within_h=float(raw["due_within_h"]),
            evidence=tuple(raw.get("evidence", ())),
            inhibited_by=tuple(raw.get("inhibited_by", ())),
            pack_name=str(data["pack"]),
            pack_version=str(data["version"]),
            where=self.where(*p),
        )

    def review(self, raw: Mapping[str, Any]) -> ReviewPolicy | None:
        """Build the needs_review policy, or None (with problems noted)."""
        p = ("needs_review",)
        when = self.compile(raw["when"], *p, "when")
        texts = {k: self._template(raw[k], *p, k) for k in ("title", "explanation", "advice")}
        debounce = self._debounce(raw, "debounce", *p)
        title, explanation, advice = texts["title"], texts["explanation"], texts["advice"]
        if when is None or title is None or explanation is None or advice is None:
            return None
        return ReviewPolicy(
            when=when,
            debounce=debounce,
            clear_windows=int(raw.get("clear_windows", 6)),
            cooldown_s=float(raw.get("cooldown_h", self.defaults.get("cooldown_h", 0.0))) * 3600.0,
            severity=Severity[raw.get("severity", "warning").upper()],
            title=title,
            explanation=explanation,
            advice=advice,
            due_within_h=float(raw["due_within_h"]),
            pack_name=str(self.item.data["pack"]),
            pack_version=str(self.item.data["version"]),
            where=self.where(*p),
        )
