"""Reading one rule pack file: YAML with the line of every key, checked against the JSON Schema.

Every problem names its file and line (`Problem`), and a file reports all of its schema
problems at once, so a person fixes a pack in one pass. What the data means is built
elsewhere (rules/build.py); this module knows only text, lines and the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from edge_agent.core.errors import RuleError

PACK_SCHEMA = "rule-pack-v1.schema.json"

# A key path inside a file: ("rules", 0, "raise", "guard", "probs", "cavitation").
KeyPath = tuple[str | int, ...]


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
class Where:
    """Where a pack element was written, for messages: file and the line of each field."""

    file: Path
    line: int
    fields: Mapping[str, int] = field(default_factory=dict)

    def at(self, name: str) -> int:
        """Line of one field (the element's own line if unknown)."""
        return self.fields.get(name, self.line)


class PackFile(NamedTuple):
    """One file's data, valid against the schema, and the line of every key path in it."""

    file: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int]


def pack_schema() -> dict[str, Any]:
    """The JSON Schema of the pack format."""
    text = (resources.files("edge_agent.rules") / "schemas" / PACK_SCHEMA).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def read_pack_file(path: Path) -> PackFile:
    """Read and validate one file; PackError lists every schema problem with its line."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError([Problem(path, 0, f"cannot be read: {exc}")]) from exc
    loader = yaml.SafeLoader(text)
    lines: dict[KeyPath, int] = {}
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
    return PackFile(path, data, lines)


def _plain(
    loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]
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
    error: jsonschema.ValidationError, lines: dict[KeyPath, int]
) -> Iterator[tuple[int, str]]:
    path: KeyPath = tuple(error.absolute_path)
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
