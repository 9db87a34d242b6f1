"""Safe text templates for rule packs: `{stats.vibration.change_pct:+.0f}` and nothing more.

Pack authors are not trusted with `str.format` (its attribute and index access reach into
Python objects). A placeholder here is a dotted path looked up in plain dicts, with an
optional numeric format spec from a short whitelist.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from edge_agent.core.errors import RuleError

# A placeholder: {path} or {path:spec}; `{{` and `}}` stand for literal braces.
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*")
# Sign, precision and type of a number: `+.0f`, `.1f`, `.0%`, `d`. No fill, no width.
_SPEC = re.compile(r"\+?(?:\.\d)?[fd%]?")


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One `{path:spec}` of a template."""

    path: tuple[str, ...]
    spec: str

    @property
    def name(self) -> str:
        """The dotted path as written."""
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders, alternating."""

    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        """Every placeholder, in order."""
        return tuple(p for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, object]) -> str:
        """Fill the template; a path that does not resolve renders as `?` (checked at load)."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            out.append(_format(lookup(values, part.path), part.spec))
        return "".join(out)


def parse(source: str) -> Template:
    """Parse a template, raising RuleError naming the column of a malformed placeholder."""
    parts: list[str | Placeholder] = []
    pos = 0
    text: list[str] = []
    for match in _TOKEN.finditer(source):
        text.append(source[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
            continue
        inner = match.group(1)
        if inner is None:
            raise RuleError(f"unbalanced brace at column {match.start() + 1}")
        path, _, spec = inner.partition(":")
        path = path.strip()
        if not _PATH.fullmatch(path):
            raise RuleError(f"placeholder {{{inner}}} at column {match.start() + 1} is not a path")
        if not _SPEC.fullmatch(spec) or ("." in spec and spec.endswith("d")):
            raise RuleError(f"placeholder {{{inner}}}: format {spec!r} is not [+][.N][f|d|%]")
        if "." in spec and not spec.endswith(("f", "%")):
            spec += "f"  # `.1` alone would be general format (1e+02); authors mean fixed
        if text:
            parts.append("".join(text))
            text = []
        parts.append(Placeholder(tuple(path.split(".")), spec))
    text.append(source[pos:])
    if any(text):
        parts.append("".join(text))
    return Template(source, tuple(parts))


def unknown_placeholders(template: Template, known: Callable[[tuple[str, ...]], bool]) -> list[str]:
    """Return the names of placeholders that `known` rejects."""
    return [p.name for p in template.placeholders if not known(p.path)]


def lookup(values: Mapping[str, object], path: Sequence[str]) -> object:
    """The value at a dotted path through nested mappings; None where a key is missing.

    The one path walk of the package: templates, evidence and bands read values with it.
    """
    node: object = values
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _format(value: object, spec: str) -> str:
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if not spec:
            return f"{value:.3g}" if isinstance(value, float) else str(value)
        if spec.endswith("d"):
            return format(round(value), spec)
        # `format` on a number with a whitelisted spec: no attribute access is possible.
        return format(float(value), spec)
    return str(value)
