"""Rule conditions: CEL expressions, compiled once, evaluated against one window's values.

Library choice, measured on this project's typical condition
(`score > threshold && probs.bearing_wear >= 0.5 && stats.vibration.rms > 4.5 && ...`,
Python 3.11, one core of the development machine):

- `common-expression-language` (Rust bindings): ~6,000 evaluations/s when all of a
  window's values are converted into a `cel.Context` for each evaluation (the nested dicts
  dominate); ~1,000,000/s against a context built once. With `Projection` below the
  default pack ran at ~9,500-13,000 windows/s, context building included; with the
  shortcuts of rules/shortcut.py, which settle most conditions from the plain values
  without a context, at ~60,000-70,000 (`python -m bench.bench_rules`). Typed stubs;
  errors carry line and column.
- `cel-python` (pure Python, lark): ~3,500 evaluations/s even with the activation
  converted ahead of time.

The Rust bindings win by two orders of magnitude on the hot path, so they are used here.
CEL never reaches Python objects: no attribute access, no calls except its own functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import cel

from edge_agent.core.errors import RuleError
from edge_agent.rules.shortcut import Shortcut, Values, compile_shortcut

# Names a condition may use at its top level (see `activation` in rules/engine.py).
VARIABLES = frozenset(
    {
        "asset",
        "score",
        "threshold",
        "ratio",
        "anomalous",
        "contrib",
        "probs",
        "stats",
        "top_class",
        "top_prob",
        "meta",
        "k",
        "band",
        "flag",
        "at_raise",
    }
)
_MACROS = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(")
# `stats.vibration.rms`, `probs["bearing_wear"]`, `k.vib_zone_cd` ...
_ROOTS = "stats|contrib|probs|meta|k|band|flag|at_raise"
# A root (not itself a field: `at_raise.stats` is one reference, not two) and its fields:
# `stats.vibration.rms`, `probs["bearing_wear"]`, `at_raise.stats.temperature.baseline`.
_REF = re.compile(
    rf"(?<![.\w])({_ROOTS})((?:\s*(?:\.\s*[A-Za-z_]\w*|\[\s*['\"][^'\"]+['\"]\s*\]))+)"
)
_SEG = re.compile(r"\.\s*([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\]")


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled CEL condition; `source` is the text as written in the pack.

    `shortcut` settles it from the window's plain values where that is certain (see
    rules/shortcut.py), so most windows need no CEL context at all.
    """

    source: str
    program: cel.Program
    shortcut: Shortcut

    def __call__(self, context: cel.Context) -> bool:
        """Evaluate against one window; a non-boolean result is a RuleError."""
        try:
            result = self.program.execute(context)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RuleError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, bool):
            raise RuleError(f"{self.source!r} gave {result!r}, not true or false")
        return result

    def references(self) -> list[tuple[str, ...]]:
        """The paths the expression reads: ('stats', 'vibration', 'rms'), ('probs', 'x')..."""
        refs: list[tuple[str, ...]] = []
        for m in _REF.finditer(self.source):
            segments = [a or b for a, b in _SEG.findall(m.group(2))]
            if self.source[m.end() :].lstrip().startswith("("):
                segments = segments[:-1]  # a macro or method (`contrib.exists(s, ...)`)
            if segments:
                refs.append((m.group(1), *segments))
        return refs

    def unknown_variables(self) -> list[str]:
        """Top-level names CEL would not find (skipped when macros bind their own names)."""
        if _MACROS.search(self.source):
            return []
        return [v for v in self.program.variables() if v not in VARIABLES]


def compile_condition(source: str) -> Condition:
    """Compile one CEL expression, raising RuleError with the parser's message."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        # The parser's message repeats the whole expression; keep its first line and caret.
        raise RuleError(f"does not compile: {_first_error(str(exc))}") from exc
    return Condition(source, program, compile_shortcut(source))


class Projection:
    """The parts of a window's values that a pack's conditions read.

    Converting Python values into CEL is the advisor's main cost: every nested dict in the
    context is converted when the context is built (~160 us for all five signals' stats,
    the probabilities and the constants), and a lazy resolver is worse (the default pack
    ran at 2,900 windows/s with one), as it converts a whole top-level value on every
    access. So the context holds only the paths the conditions name
    (`stats.vibration.mean`, `probs.cavitation`): ~40 us for the default pack. A root read
    any other way (a macro, an index by variable) is passed whole.
    """

    def __init__(self, conditions: Iterable[Condition]) -> None:
        whole: set[str] = set()
        paths: dict[str, set[tuple[str, ...]]] = {}
        for cond in conditions:
            refs = cond.references()
            for name in cond.program.variables():
                mine = [r[1:] for r in refs if r[0] == name]
                uses = len(re.findall(rf"(?<![.\w]){re.escape(name)}\b", cond.source))
                if mine and uses == len(mine):
                    paths.setdefault(name, set()).update(mine)
                else:
                    whole.add(name)
        self._whole = tuple(sorted(whole))
        self._paths = {k: tuple(sorted(v)) for k, v in paths.items() if k not in whole}

    def context(
        self, values: Mapping[str, object], extra: Mapping[str, object] | None = None
    ) -> cel.Context:
        """Build the evaluation context of one window; `extra` roots are passed as they are."""
        out: dict[str, object] = {v: values[v] for v in self._whole if v in values}
        for root in self._paths:
            if (part := self.part(root, values.get(root))) is not None:
                out[root] = part
        if extra:
            out.update(extra)
        return cel.Context(out)

    def part(self, root: str, source: object) -> object:
        """What of one root's value goes into a context (None: nothing to pass)."""
        if root in self._whole or not isinstance(source, Mapping):
            return source
        node: dict[str, object] = {}
        for path in self._paths.get(root, ()):
            _copy(source, node, path)
        return node


class Window:
    """One window's CEL context, built on the first condition its shortcut cannot settle.

    Built once for the window and shared by its conditions. In a normal window every
    condition of the default pack settles without it, which saves ~50 us of the ~90 us
    a window cost when the context was built for each.
    """

    __slots__ = ("_context", "_late", "_projection", "values")

    def __init__(self, projection: Projection, values: Values) -> None:
        self._projection = projection
        self.values = values
        self._context: cel.Context | None = None
        self._late: dict[str, object] = {}

    def add_variable(self, name: str, value: object) -> None:
        """Set a root computed during the window (`flag`, `at_raise`), now or once built."""
        if self._context is not None:
            self._context.add_variable(name, value)
        else:
            self._late[name] = value

    def evaluate(self, cond: Condition) -> bool:
        """The condition's value by CEL (its shortcut already asked), building the context."""
        if self._context is None:
            self._context = self._projection.context(self.values, self._late)
        return cond(self._context)


def _copy(source: Mapping[str, object], target: dict[str, object], path: tuple[str, ...]) -> None:
    """Copy one path from nested mappings; a missing key is left out (CEL reports it)."""
    key, rest = path[0], path[1:]
    if key not in source:
        return
    value = source[key]
    if not rest or not isinstance(value, Mapping):
        target[key] = value
        return
    sub = target.setdefault(key, {})
    assert isinstance(sub, dict)
    _copy(value, sub, rest)


def _first_error(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "ERROR" in line:
            return " ".join(lines[i : i + 3]).replace("ERROR: <input>:", "at ")
    return lines[0] if lines else message
