"""Settling a condition from a window's plain values, without CEL, where that is certain.

Why: moving a window's values into a `cel.Context` costs ~1-2 us per value (~50 us for
what the default pack reads), while executing a compiled program costs ~0.1-0.7 us. Most
windows are normal: no fault class is likely, nothing is anomalous, so most conditions are
false because of one comparison such as `probs.cavitation >= k.p_fault`, and the `running`
flag is two comparisons. Settling those in Python lets most windows skip the context.

A shortcut answers True or False only where CEL is certain to give that boolean without an
error, and None ("ask CEL") otherwise:

- The text is split at `||`, then at `&&`, only outside brackets and string literals, and
  only when no `?` (conditional, optional field) is left at that level: these are CEL's
  lowest-precedence operators, so the parts are exactly the operands. Text the splitter is
  not sure of (escapes, raw, bytes or triple-quoted strings, `//` comments) is never settled.
- CEL's `&&` and `||` are commutative: `e && false` is false and `e || true` is true even
  where `e` is an error or not a boolean (tests/test_rules_shortcut.py checks the library),
  so one settled operand can settle the whole, as in CEL itself.
- Atoms are few and typed: a boolean path (`anomalous`, `flag.running`, `!anomalous`), a
  numeric path compared (`<`, `<=`, `>`, `>=`) with a numeric path or a number literal, a
  string path compared (`==`, `!=`) with a string literal or tested `in` a list of them. A
  missing path or a value of another Python type (a numpy scalar, a bool where a number is
  expected) gives None, and CEL decides as before.

Each shortcut is one generated Python expression (a lambda): the closures of an earlier
version cost ~0.7 us per condition in calls alone, as much as the rest of a window's
rules. Pack text reaches the generated code only through `repr` and bound constants.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from itertools import count

Values = Mapping[str, object]
Shortcut = Callable[[Values], bool | None]

_PATH = r"[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*"
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_STRING = r"\"[^\"]*\"|'[^']*'"
_PATH_ONLY = re.compile(_PATH)
_ORDER = re.compile(rf"({_PATH})\s*(<=|>=|<|>)\s*({_PATH}|{_NUMBER})")
_EQUAL = re.compile(rf"({_PATH})\s*(==|!=)\s*({_STRING})")
_IN = re.compile(rf"({_PATH})\s+in\s*\[\s*((?:{_STRING})(?:\s*,\s*(?:{_STRING}))*)\s*\]")
_LITERALS = frozenset({"true", "false", "null", "in"})
_OPEN, _CLOSE = "([{", ")]}"
_UNKNOWN = "None"
# CEL's int is 64-bit: a larger Python int is not a number CEL would compare.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def compile_shortcut(source: str) -> Shortcut:
    """A function of a window's values: the condition's value where certain, else None."""
    gen = _Gen()
    expr = gen.node(source)
    # `v` is the window's values; only a plain dict is read (see _Gen.get).
    code = f"lambda v: ({expr}) if type(v) is dict else None"
    try:
        settle: Shortcut = eval(code, gen.constants)  # noqa: S307 - generated, see above
    except (SyntaxError, RecursionError, MemoryError):
        return _unknown  # brackets nested past Python's parser limits: CEL decides alone
    return settle


def _unknown(_values: Values) -> bool | None:
    return None


class _Gen:
    """Writes one condition as a Python expression that gives True, False or None."""

    def __init__(self) -> None:
        # The generated code sees these names and nothing else (no builtins).
        self.constants: dict[str, object] = {"__builtins__": {}, "_M": _MISSING}
        self.constants |= {"type": type, "dict": dict, "float": float, "int": int}
        self.constants |= {"str": str, "bool": bool}
        self._names = count()

    def _name(self, prefix: str) -> str:
        """A fresh local: nested parts assign their own, so none overwrites another's."""
        return f"_{prefix}{next(self._names)}"

    def node(self, text: str) -> str:
        text = text.strip()
        mask = _mask(text)
        if mask is None or "?" in mask:
            return _UNKNOWN
        for op, combine in (("||", self._any), ("&&", self._all)):
            parts = _split(text, mask, op)
            if len(parts) > 1:
                return combine([self.node(p) for p in parts])
        if mask.strip() == "" and text[:1] == "(" and text[-1:] == ")":
            return self.node(text[1:-1])  # `(a || b)`: _mask has checked the brackets pair up
        if text.startswith("!") and not text.startswith("!="):
            # `!` binds tighter than comparisons: negate only a path or a bracketed whole.
            rest = text[1:].strip()
            if _PATH_ONLY.fullmatch(rest) or (rest[:1] == "(" and _mask(rest) == " " * len(rest)):
                t = self._name("t")
                return f"(None if ({t} := {self.node(rest)}) is None else not {t})"
            return _UNKNOWN
        return self._atom(text)

    def _all(self, parts: list[str]) -> str:
        # CEL: `e && false` is false whatever `e` is; true only when every part is. Flat,
        # not nested, so a long conjunction stays within Python's parser limits.
        names = [self._name("t") for _ in parts]
        first_false = " or ".join(
            f"({t} := {p}) is False" for t, p in zip(names, parts, strict=True)
        )
        all_true = " and ".join(f"{t} is True" for t in names)
        return f"(False if {first_false} else (True if {all_true} else None))"

    def _any(self, parts: list[str]) -> str:
        # CEL: `e || true` is true whatever `e` is; false only when every part is.
        names = [self._name("t") for _ in parts]
        first_true = " or ".join(f"({t} := {p}) is True" for t, p in zip(names, parts, strict=True))
        all_false = " and ".join(f"{t} is False" for t in names)
        return f"(True if {first_true} else (False if {all_false} else None))"

    def _atom(self, text: str) -> str:
        if _PATH_ONLY.fullmatch(text):
            x = self._name("x")
            get = self.get(text)
            return _UNKNOWN if get is None else f"({x} if type({x} := {get}) is bool else None)"
        if m := _ORDER.fullmatch(text):
            return self._order(m.group(1), m.group(2), m.group(3))
        if m := _EQUAL.fullmatch(text):
            return self._string_test(m.group(1), {m.group(3)[1:-1]}, equal=m.group(2) == "==")
        if m := _IN.fullmatch(text):
            members = {s[1:-1] for s in re.findall(_STRING, m.group(2))}
            return self._string_test(m.group(1), members, equal=True)
        return _UNKNOWN

    def _order(self, left: str, op: str, right: str) -> str:
        a, b = self._name("a"), self._name("b")
        lget = self.get(left)
        if re.fullmatch(_NUMBER, right):
            literal = float(right) if re.search(r"[.eE]", right) else int(right)
            if not math.isfinite(literal) or not _INT_MIN <= literal <= _INT_MAX:
                return _UNKNOWN
            rget: str | None = repr(literal)
        else:
            rget = self.get(right)
        if lget is None or rget is None:
            return _UNKNOWN
        # Python compares int and float exactly, as CEL's heterogeneous comparisons do.
        return (
            f"({a} {op} {b} if {_number(f'({a} := {lget})', a)} "
            f"and {_number(f'({b} := {rget})', b)} else None)"
        )

    def _string_test(self, left: str, literals: set[str], *, equal: bool) -> str:
        """`left == "x"` (equal), `left != "x"`, `left in ["x", "y"]` (equal)."""
        get = self.get(left)
        if get is None:
            return _UNKNOWN
        s, members = self._name("s"), self._name("c")
        self.constants[members] = frozenset(literals)
        test = f"{s} in {members}" if equal else f"{s} not in {members}"
        return f"({test} if type({s} := {get}) is str else None)"

    def get(self, text: str) -> str | None:
        """An expression reading a path of `v`, or _M (missing); None: not a path.

        Only plain dicts are walked (what `activation` builds, and the pack's constants):
        a mapping of another kind might answer a key (a defaultdict) that CEL, given the
        converted value, would not find.
        """
        names = [part.strip() for part in text.split(".")]
        if names[0] in _LITERALS:
            return None
        expr = f"v.get({names[0]!r}, _M)"
        for key in names[1:]:
            n = self._name("n")
            expr = f"({n}.get({key!r}, _M) if type({n} := {expr}) is dict else _M)"
        return expr


def _number(assign: str, name: str) -> str:
    """Whether CEL compares the value as Python does.

    A float but NaN (CEL fails on NaN: "no such overload"), or an int within 64 bits; not a
    bool, nor a numpy scalar.
    """
    return (
        f"(type({assign}) is float and {name} == {name} "
        f"or type({name}) is int and {_INT_MIN} <= {name} <= {_INT_MAX})"
    )


_MISSING = object()


def _mask(text: str) -> str | None:
    """`text` with everything inside brackets or string literals blanked; None if unsure."""
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" or text.startswith("//", i):
            return None
        if c in "\"'":
            if (i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")) or text.startswith(
                c * 3, i
            ):
                return None  # raw (r"..."), bytes (b"...") or triple-quoted: not handled here
            end = text.find(c, i + 1)
            if end < 0:
                return None
            out.append(" " * (end + 1 - i))
            i = end + 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
            out.append(" ")
            i += 1
            continue
        out.append(" " if depth else c)
        i += 1
    return "".join(out) if depth == 0 else None


def _split(text: str, mask: str, op: str) -> list[str]:
    parts: list[str] = []
    start = 0
    while (at := mask.find(op, start)) >= 0:
        parts.append(text[start:at])
        start = at + len(op)
    parts.append(text[start:])
    return parts if len(parts) > 1 else [text]
