"""Rule packs: YAML files checked against a JSON Schema, compiled once, with file:line errors.

A pack names itself and its version, sets constants (zone limits, ...) and defaults, and
holds one rule per fault class plus the `needs_review` policy for anomalies the model cannot
classify. Several files may be loaded together; rule ids must be unique across them, and a
later file may set constants and redefine bands and flags (a site pack). Reading a file is
rules/packfile.py, building its parts rules/build.py, what they are rules/parts.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from edge_agent.rules.build import Builder
from edge_agent.rules.packfile import (
    PackError,
    PackFile,
    Problem,
    Where,
    pack_schema,
    read_pack_file,
)
from edge_agent.rules.parts import (
    Band,
    Debounce,
    Escalation,
    Flag,
    ReviewPolicy,
    Rule,
    RulePack,
    Severity,
)

__all__ = [
    "Band",
    "Debounce",
    "Escalation",
    "Flag",
    "PackError",
    "Problem",
    "ReviewPolicy",
    "Rule",
    "RulePack",
    "Severity",
    "Where",
    "default_pack_path",
    "load_pack",
    "pack_schema",
]

# The pack shipped for each kind of model (rules/parts.py, RulePack.model_kind).
DEFAULT_PACKS = {"classifier": "default.yaml", "learned": "learned.yaml"}


def default_pack_path(model_kind: str = "classifier") -> Path:
    """The pack shipped with the agent for a kind of model (`classifier` or `learned`)."""
    name = DEFAULT_PACKS[model_kind]
    return Path(str(resources.files("edge_agent.rules") / "packs" / name))


def load_pack(paths: Sequence[Path]) -> RulePack:
    """Load and compile rule packs (none: the packaged default); PackError lists every problem."""
    files = tuple(paths) or (default_pack_path(),)
    problems: list[Problem] = []
    loaded: list[PackFile] = []
    for path in files:
        try:
            loaded.append(read_pack_file(path))
        except PackError as exc:
            problems += exc.problems
    if problems:
        raise PackError(problems)
    return _combine(loaded)


def _combine(loaded: Sequence[PackFile]) -> RulePack:
    problems: list[Problem] = []
    rules: dict[str, Rule] = {}
    bands: dict[str, Band] = {}
    flags: dict[str, Flag] = {}
    review: ReviewPolicy | None = None
    # Guards read the constants of every file, as CEL's `k` does; a band's edges are fixed
    # by the constants known where it is defined.
    constants: dict[str, float] = {}
    for item in loaded:
        constants.update(item.data.get("constants", {}))
    so_far: dict[str, float] = {}
    for item in loaded:
        build = Builder(item, constants, problems)
        so_far.update(item.data.get("constants", {}))
        # A later file may redefine a band or a flag (a site pack with other zone limits).
        for name, raw in item.data.get("bands", {}).items():
            if (band := build.band(name, raw, so_far)) is not None:
                bands[name] = band
        for name, raw in item.data.get("flags", {}).items():
            if (cond := build.condition(raw, "flags", name)) is not None:
                flags[name] = Flag(name, cond, build.where("flags", name))
        _add_rules(build, rules, problems)
        review = _review(build, review, problems)
    if review is None and not problems:
        problems.append(Problem(loaded[0].file, 1, "no file of the pack sets needs_review"))
    model_kind = _model_kind(loaded, problems)
    if problems:
        raise PackError(problems)
    assert review is not None
    return RulePack(
        name="+".join(str(i.data["pack"]) for i in loaded),
        model_kind=model_kind,
        version="+".join(str(i.data["version"]) for i in loaded),
        rules=tuple(rules.values()),
        review=review,
        constants=constants,
        bands=tuple(bands.values()),
        flags=tuple(flags.values()),
        files=tuple(i.file for i in loaded),
    )


def _model_kind(loaded: Sequence[PackFile], problems: list[Problem]) -> str:
    """The kind of model every file of the pack is for (a problem per file where they differ)."""
    kinds = [str(item.data.get("model_kind", "classifier")) for item in loaded]
    if len(set(kinds)) > 1:
        for item, kind in zip(loaded, kinds, strict=True):
            line = item.lines.get(("model_kind",), 1)
            problems.append(Problem(item.file, line, f"model_kind {kind}: the files disagree"))
    return kinds[0]


def _review(
    build: Builder, review: ReviewPolicy | None, problems: list[Problem]
) -> ReviewPolicy | None:
    """The review policy so far, with this file's: one file of the pack sets it."""
    item = build.item
    if "needs_review" not in item.data:
        return review
    if review is not None:
        line = item.lines.get(("needs_review",), 0)
        problems.append(
            Problem(item.file, line, f"needs_review already set in {review.where.file}")
        )
        return review
    return build.review(item.data["needs_review"])


def _add_rules(build: Builder, rules: dict[str, Rule], problems: list[Problem]) -> None:
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
