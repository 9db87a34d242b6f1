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

How: each shortcut is a small tree of Python closures, built once per condition. Pack
text only ever becomes dictionary keys and constants, never code: rule conditions are not
run through Python's `eval`/`exec`/`compile` (issue 6, DESIGN.md), however carefully the
source is built. An `&&` or `||` of n parts is one closure over its parts (unrolled for two
and three), so a 300-part conjunction is one level deep; brackets and `!(...)` nested past
`_MAX_DEPTH` are left to CEL, so evaluation stays far from Python's recursion limit.

The cost is a Python call per node (~0.02-0.05 us), where one generated expression per
condition had none: settling all 18 conditions of the default pack takes ~8.8 us per window
against ~6.9 us, and the advisor as a whole (bench/bench_rules.py) runs ~70,000 windows/s
against ~76,000 (without shortcuts, ~10,000). To keep it there, atoms read paths of up to
three keys inline rather than through a getter, `!path` is one closure, and parts only CEL
can decide are dropped when the tree is built. Objects with `__slots__` and a `settle`
method measured the same as closures.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping

Values = Mapping[str, object]
Shortcut = Callable[[Values], bool | None]

_PATH = r"[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*"
_NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"
_STRING = r"\"[^\"]*\"|'[^']*'"
_PATH_ONLY = re.compile(_PATH)
_NUMBER_ONLY = re.compile(_NUMBER)
_ORDER = re.compile(rf"({_PATH})\s*(<=|>=|<|>)\s*({_PATH}|{_NUMBER})")
_EQUAL = re.compile(rf"({_PATH})\s*(==|!=)\s*({_STRING})")
_IN = re.compile(rf"({_PATH})\s+in\s*\[\s*((?:{_STRING})(?:\s*,\s*(?:{_STRING}))*)\s*\]")
_LITERALS = frozenset({"true", "false", "null", "in"})
_OPEN, _CLOSE = "([{", ")]}"
Compare = Callable[[float, float], bool]
_COMPARE: dict[str, Compare] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# CEL's int is 64-bit: a larger Python int is not a number CEL would compare.
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
# Brackets and `!` nest one closure each: deeper than this, CEL decides (and no evaluation
# can come near Python's recursion limit).
_MAX_DEPTH = 48


def compile_shortcut(source: str) -> Shortcut:
    """A function of a window's values: the condition's value where certain, else None."""
    return _node(source, 0) or _unknown


def _unknown(_values: Values) -> bool | None:
    return None


# A path is its keys; the first is read from the window's values, the rest walk down.
Path = tuple[str, ...]


def _node(text: str, depth: int) -> Shortcut | None:
    """The shortcut of `text`, or None where it can never settle (CEL alone decides)."""
    text = text.strip()
    mask = _mask(text)
    if mask is None or "?" in mask or depth > _MAX_DEPTH:
        return None
    for op, combine in (("||", _any), ("&&", _all)):
        parts = _split(text, mask, op)
        if len(parts) > 1:
            return combine([_node(p, depth + 1) for p in parts])
    if mask.strip() == "" and text[:1] == "(" and text[-1:] == ")":
        return _node(text[1:-1], depth + 1)  # `(a || b)`: _mask checked the brackets pair up
    if text.startswith("!") and not text.startswith("!="):
        return _negation(text[1:].strip(), depth)
    return _atom(text)


def _negation(rest: str, depth: int) -> Shortcut | None:
    """`!rest`: `!` binds tighter than comparisons, so only a path or a bracketed whole."""
    if _PATH_ONLY.fullmatch(rest):  # `!anomalous`: one closure, not two
        path = _path(rest)
        return None if path is None else _boolean(path, negate=True)
    if rest[:1] == "(" and _mask(rest) == " " * len(rest):
        inner = _node(rest, depth + 1)
        return None if inner is None else _not(inner)
    return None


def _not(inner: Shortcut) -> Shortcut:
    def settle(v: Values) -> bool | None:
        t = inner(v)
        return None if t is None else not t

    return settle


def _all(maybe: list[Shortcut | None]) -> Shortcut | None:
    """CEL: `e && false` is false whatever `e` is; true only when every part is."""
    return _junction(maybe, decisive=False)


def _any(maybe: list[Shortcut | None]) -> Shortcut | None:
    """CEL: `e || true` is true whatever `e` is; false only when every part is."""
    return _junction(maybe, decisive=True)


def _junction(maybe: list[Shortcut | None], *, decisive: bool) -> Shortcut | None:
    """`&&` (decisive False) or `||` (decisive True) over the parts the subset settles.

    A part that returns `decisive` settles the whole; the other value needs every part.
    """
    parts = tuple(p for p in maybe if p is not None)
    if not parts:
        return None
    if len(parts) < len(maybe):  # a part only CEL decides: `decisive` at most
        return _decisive_or_unknown(parts, decisive)
    if len(parts) == 2:  # the commonest form: no loop
        return _pair(parts[0], parts[1], decisive)
    if len(parts) == 3 and not decisive:  # `flag.running && probs.x >= k.p && ...`
        first, second, third = parts

        def settle3(v: Values) -> bool | None:
            if (a := first(v)) is False or (b := second(v)) is False or (c := third(v)) is False:
                return False
            return a and b and c  # each True or None here

        return settle3
    return _loop(parts, decisive)


def _pair(first: Shortcut, second: Shortcut, decisive: bool) -> Shortcut:
    def settle2(v: Values) -> bool | None:
        if (a := first(v)) is decisive or (b := second(v)) is decisive:
            return decisive
        return None if a is None or b is None else not decisive

    return settle2


def _loop(parts: tuple[Shortcut, ...], decisive: bool) -> Shortcut:
    def settle(v: Values) -> bool | None:
        known = True
        for part in parts:
            t = part(v)
            if t is decisive:
                return decisive
            if t is None:
                known = False
        return (not decisive) if known else None

    return settle


def _decisive_or_unknown(parts: tuple[Shortcut, ...], decisive: bool) -> Shortcut:
    def settle(v: Values) -> bool | None:
        for part in parts:
            if part(v) is decisive:
                return decisive
        return None

    return settle


def _atom(text: str) -> Shortcut | None:
    if _PATH_ONLY.fullmatch(text):
        path = _path(text)
        return None if path is None else _boolean(path, negate=False)
    if m := _ORDER.fullmatch(text):
        return _order(m.group(1), _COMPARE[m.group(2)], m.group(3))
    if m := _EQUAL.fullmatch(text):
        return _string_test(m.group(1), {m.group(3)[1:-1]}, equal=m.group(2) == "==")
    if m := _IN.fullmatch(text):
        members = {s[1:-1] for s in re.findall(_STRING, m.group(2))}
        return _string_test(m.group(1), members, equal=True)
    return None


def _path(text: str) -> Path | None:
    """The keys of a path; None: a literal, not a path."""
    keys = tuple(part.strip() for part in text.split("."))
    return None if keys[0] in _LITERALS else keys


Getter = Callable[[object], object]


def _getter(path: Path) -> Getter:
    """A function reading `path`, or None where it is missing (no value CEL settles).

    Only plain dicts are walked (what `activation` builds, and the pack's constants): a
    mapping of another kind might answer a key (a defaultdict) that CEL, given the
    converted value, would not find. The atoms read paths of up to three keys inline.
    """

    def get(v: object) -> object:
        x = v
        for key in path:
            if type(x) is not dict:
                return None
            x = x.get(key)
        return x

    return get


def _boolean(path: Path, *, negate: bool) -> Shortcut:
    """`flag.running`, or `!flag.running` (negate)."""
    if (short := _short(path)) is not None:
        k0, k1, k2 = short

        def settle_short(v: Values) -> bool | None:
            if type(v) is not dict:
                return None
            x = v.get(k0)
            if k1 is not None:
                x = x.get(k1) if type(x) is dict else None
                if k2 is not None:
                    x = x.get(k2) if type(x) is dict else None
            return x is not negate if type(x) is bool else None

        return settle_short
    get = _getter(path)

    def settle(v: Values) -> bool | None:
        return x is not negate if type(x := get(v)) is bool else None

    return settle


def _order(left: str, compare: Compare, right: str) -> Shortcut | None:
    lpath = _path(left)
    if lpath is None:
        return None
    if _NUMBER_ONLY.fullmatch(right):
        literal = float(right) if re.search(r"[.eE]", right) else int(right)
        if not math.isfinite(literal) or not _INT_MIN <= literal <= _INT_MAX:
            return None
        return _order_literal(lpath, compare, literal)
    rpath = _path(right)
    return None if rpath is None else _order_paths(lpath, compare, rpath)


def _short(path: Path) -> tuple[str, str | None, str | None] | None:
    """A path of up to three keys, padded with None; None: a getter walks it.

    The atoms read these inline, saving a getter call (~20% of an atom).
    """
    if len(path) > 3:  # four keys or more
        return None
    k1, k2 = (*path[1:], None, None)[:2]
    return path[0], k1, k2


def _order_paths(lpath: Path, compare: Compare, rpath: Path) -> Shortcut:
    lo, hi = _INT_MIN, _INT_MAX
    lshort, rshort = _short(lpath), _short(rpath)
    if lshort is not None and rshort is not None:
        (l0, l1, l2), (r0, r1, r2) = lshort, rshort

        def settle_short(v: Values) -> bool | None:
            if type(v) is not dict:
                return None
            a = v.get(l0)
            if l1 is not None:
                a = a.get(l1) if type(a) is dict else None
                if l2 is not None:
                    a = a.get(l2) if type(a) is dict else None
            if not ((type(a) is float and a == a) or (type(a) is int and lo <= a <= hi)):  # noqa: PLR0124 - NaN
                return None
            b = v.get(r0)
            if r1 is not None:
                b = b.get(r1) if type(b) is dict else None
                if r2 is not None:
                    b = b.get(r2) if type(b) is dict else None
            if not ((type(b) is float and b == b) or (type(b) is int and lo <= b <= hi)):  # noqa: PLR0124 - NaN
                return None
            return compare(a, b)

        return settle_short
    return _order_long(lpath, compare, rpath)


def _order_long(lpath: Path, compare: Compare, rpath: Path) -> Shortcut:
    lo, hi = _INT_MIN, _INT_MAX
    lget, rget = _getter(lpath), _getter(rpath)

    def settle(v: Values) -> bool | None:
        a = lget(v)
        if not ((type(a) is float and a == a) or (type(a) is int and lo <= a <= hi)):  # noqa: PLR0124 - NaN
            return None
        b = rget(v)
        if not ((type(b) is float and b == b) or (type(b) is int and lo <= b <= hi)):  # noqa: PLR0124 - NaN
            return None
        return compare(a, b)

    return settle


def _order_literal(lpath: Path, compare: Compare, b: float) -> Shortcut:
    lo, hi = _INT_MIN, _INT_MAX
    if (short := _short(lpath)) is not None:
        l0, l1, l2 = short

        def settle_short(v: Values) -> bool | None:
            if type(v) is not dict:
                return None
            a = v.get(l0)
            if l1 is not None:
                a = a.get(l1) if type(a) is dict else None
                if l2 is not None:
                    a = a.get(l2) if type(a) is dict else None
            if (type(a) is float and a == a) or (type(a) is int and lo <= a <= hi):  # noqa: PLR0124 - NaN
                return compare(a, b)
            return None

        return settle_short
    get = _getter(lpath)

    def settle(v: Values) -> bool | None:
        a = get(v)
        if (type(a) is float and a == a) or (type(a) is int and lo <= a <= hi):  # noqa: PLR0124 - NaN
            return compare(a, b)
        return None

    return settle


def _string_test(left: str, literals: set[str], *, equal: bool) -> Shortcut | None:
    """`left == "x"` (equal), `left != "x"`, `left in ["x", "y"]` (equal)."""
    path = _path(left)
    if path is None:
        return None
    members = frozenset(literals)
    if (short := _short(path)) is not None:
        k0, k1, k2 = short

        def settle_short(v: Values) -> bool | None:
            if type(v) is not dict:
                return None
            s = v.get(k0)
            if k1 is not None:
                s = s.get(k1) if type(s) is dict else None
                if k2 is not None:
                    s = s.get(k2) if type(s) is dict else None
            return (s in members) is equal if type(s) is str else None

        return settle_short
    get = _getter(path)

    def settle(v: Values) -> bool | None:
        s = get(v)
        return (s in members) is equal if type(s) is str else None

    return settle


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
