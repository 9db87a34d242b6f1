"""Rule conditions: a guard that Python checks, AND a CEL expression for the rest.

In a pack a condition is CEL text; or a mapping with a `guard` (rules/guards.py), a `cel`
expression, or both, which holds when both do; or a list of those, which holds when one
does (a flag that either of two signals sets). The guard runs first, on the window's result;
when it is false the CEL part is not evaluated and no CEL context is built, which is what
keeps the advisor fast: in a normal window every guard of the default pack is false.

CEL library, measured on this project's typical condition (Python 3.11, one core of the
development machine):

- `common-expression-language` (Rust bindings): ~1,000,000 evaluations/s against a context
  built once, but converting the values into a `cel.Context` costs tens of microseconds per
  nested dict (rules/window.py keeps that to the roots a CEL part names). Typed stubs; errors
  carry line and column.
- `cel-python` (pure Python, lark): ~3,500 evaluations/s even with the activation
  converted ahead of time.

The Rust bindings win by two orders of magnitude, so they are used here. CEL never reaches
Python objects: no attribute access, no calls except its own functions. The library tells
which top-level names an expression reads (`Program.variables()`) and no deeper paths, so
the names of signals, classes and constants that `rules check` verifies by name are those
written in guards; CEL parts are checked by the library's own compiler and evaluator
(rules/check.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.core.errors import RuleError
from edge_agent.rules.celrt import cel
from edge_agent.rules.guards import Guard

if TYPE_CHECKING:
    from edge_agent.rules.window import Window

# Names a condition may use at its top level (the roots of rules/window.py, and `at_raise`).
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
        "lead",
        "role",
        "moving",
        "at_raise",
    }
)


@dataclass(frozen=True, slots=True)
class Cel:
    """A compiled CEL expression; `roots` are the window's values it reads (`k` is always in)."""

    source: str
    program: cel.Program
    roots: tuple[str, ...]
    line: int = 0  # where the pack has it (0: unknown)

    def __call__(self, w: Window) -> bool:
        """Evaluate against one window; an error or a non-boolean result is a RuleError."""
        try:
            result = self.program.execute(w.cel_context(self.roots))
        except (ArithmeticError, LookupError, TypeError, ValueError, RuntimeError) as exc:
            raise RuleError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, bool):
            raise RuleError(f"{self.source!r} gave {result!r}, not true or false")
        return result


@dataclass(frozen=True, slots=True)
class Clause:
    """`guard AND cel`, either part optional, as CEL's `&&` would combine them."""

    guard: Guard | None
    cel: Cel | None

    def holds(self, w: Window) -> bool:
        """Whether the clause holds; RuleError where CEL's `&&` would give an error."""
        undecided: RuleError | None = None
        if self.guard is not None:
            try:
                if not self.guard(w):
                    return False  # CEL is not evaluated
            except RuleError as exc:
                undecided = exc  # `error && false` is still false: CEL decides
        if self.cel is None:
            if undecided is not None:
                raise undecided
            return True
        result = self.cel(w)
        if result and undecided is not None:
            raise undecided
        return result


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a pack: its clauses, one of which must hold (usually just one)."""

    clauses: tuple[Clause, ...]

    def holds(self, w: Window) -> bool:
        """Whether it holds for one window; RuleError where no clause holds and one failed."""
        if len(self.clauses) == 1:
            return self.clauses[0].holds(w)
        failed: RuleError | None = None
        for clause in self.clauses:
            try:
                if clause.holds(w):
                    return True
            except RuleError as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
        return False

    def cel_parts(self) -> list[Cel]:
        """The CEL expressions of its clauses."""
        return [c.cel for c in self.clauses if c.cel is not None]

    def guards(self) -> list[Guard]:
        """The guards of its clauses."""
        return [c.guard for c in self.clauses if c.guard is not None]


def compile_cel(source: str, line: int = 0) -> Cel:
    """Compile one CEL expression, raising RuleError with the parser's message."""
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        # The parser's message repeats the whole expression; keep its first line and caret.
        raise RuleError(f"does not compile: {_first_error(str(exc))}") from exc
    roots = tuple(v for v in program.variables() if v in VARIABLES and v != "k")
    return Cel(source, program, roots, line)


def _first_error(message: str) -> str:
    lines = [line for line in message.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "ERROR" in line:
            return " ".join(lines[i : i + 3]).replace("ERROR: <input>:", "at ")
    return lines[0] if lines else message
