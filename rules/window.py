"""One window as the rules read it: its values built root by root, a CEL context only if asked.

Converting Python values into CEL is the advisor's main cost (a dict of eight numbers takes
tens of microseconds, all five signals' statistics over a hundred), and even building the
values as Python dicts costs more than settling every guard. So a window keeps the
`WindowResult` and builds nothing up front: guards read the result directly (rules/guards.py),
a root of the values (`stats`, `probs`, `band`, ...) is built when something first reads it,
and a root goes into CEL only when a condition's CEL part names it. The constants (`k`) go
into CEL once per pack: the advisor keeps one `Scope` and refills the window roots of its
context as each window's conditions ask for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import cel

from edge_agent.core.readings import SignalStats, WindowResult

if TYPE_CHECKING:
    from edge_agent.rules.parts import RulePack

# The roots of the raising window a clear or escalate condition may read as `at_raise`.
RAISED = ("stats", "contrib", "probs", "band", "flag", "score", "anomalous")


def ratio(result: WindowResult) -> float:
    """The anomaly score over its threshold (infinite when the threshold is not positive)."""
    threshold = float(result.threshold)
    return float(result.score) / threshold if threshold > 0 else math.inf


class Scope:
    """The advisor's CEL context, kept for the life of a pack.

    The constants are converted once; the roots of a window are added when one of its
    conditions first needs them, and replace those of the window before. `windows` counts
    the windows that needed CEL at all.
    """

    __slots__ = ("context", "pushed", "window", "windows")

    def __init__(self, constants: Mapping[str, float]) -> None:
        self.context = cel.Context({"k": dict(constants)})
        self.window: Window | None = None  # whose roots the context holds
        self.pushed: set[str] = set()
        self.windows = 0


class Window(Mapping[str, object]):
    """The values conditions and templates see for one window, each root built on first read.

    `flags` are set by the advisor once evaluated; `at_raise` is the raising window's values
    while a rule's clear and escalate conditions run.
    """

    __slots__ = ("_built", "_scope", "at_raise", "classes", "flags", "meta", "pack", "result")

    def __init__(
        self,
        result: WindowResult,
        classes: Sequence[str],
        meta: Mapping[str, object],
        pack: RulePack,
        scope: Scope | None = None,
    ) -> None:
        self.result = result
        self.classes = classes
        self.meta = meta
        self.pack = pack
        self._scope = scope
        self._built: dict[str, object] = {}
        self.flags: dict[str, bool] = {}
        self.at_raise: Mapping[str, object] = {}

    def __getitem__(self, root: str) -> object:
        built = self._built
        if root in built:
            return built[root]
        build = _BUILD.get(root)
        if build is None:
            raise KeyError(root)
        value = built[root] = build(self)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(_BUILD)

    def __len__(self) -> int:
        return len(_BUILD)

    def raised(self) -> dict[str, object]:
        """What `at_raise` holds for the rules this window raises (kept while they are open)."""
        return {root: self[root] for root in RAISED}

    def cel_context(self, roots: Sequence[str]) -> cel.Context:
        """The CEL context holding `roots` of this window (and the constants)."""
        scope = self._scope
        if scope is None:
            scope = self._scope = Scope(self.pack.constants)
        if scope.window is not self:
            scope.window = self
            scope.pushed.clear()
            scope.windows += 1
        context = scope.context
        for root in roots:
            if root == "at_raise":  # differs from rule to rule within the window
                context.add_variable(root, dict(self.at_raise))
            elif root not in scope.pushed:
                context.add_variable(root, self[root])
                scope.pushed.add(root)
        return context


def _probs(w: Window) -> dict[str, float]:
    probs = w.result.probs
    return {c: float(probs.get(c, 0.0)) for c in w.classes}


def _top(w: Window) -> tuple[str, float]:
    # The first class of the highest probability, as max() over the items in class order.
    probs = w["probs"]
    assert isinstance(probs, dict)
    if not probs:
        return "unknown", 0.0
    top: str = max(probs, key=probs.__getitem__)
    return top, probs[top]


def _stats_values(st: SignalStats) -> dict[str, object]:
    """`st._asdict()`, spelt out: a dict display is twice as fast (tests keep them equal)."""
    mean, rms, lo, hi, slope, baseline, change_pct = st
    return {
        "mean": mean,
        "rms": rms,
        "min": lo,
        "max": hi,
        "slope": slope,
        "baseline": baseline,
        "change_pct": change_pct,
    }


# Root -> how to build it; the order is the order of the values as a mapping.
_BUILD: dict[str, Callable[[Window], object]] = {
    "asset": lambda w: w.result.asset,
    "score": lambda w: float(w.result.score),
    "threshold": lambda w: float(w.result.threshold),
    "ratio": lambda w: ratio(w.result),
    "anomalous": lambda w: w.result.anomalous,
    "contrib": lambda w: {s: float(v) for s, v in w.result.contrib.items()},
    "probs": _probs,
    "stats": lambda w: {s: _stats_values(st) for s, st in w.result.stats.items()},
    "top_class": lambda w: _top(w)[0],
    "top_prob": lambda w: _top(w)[1],
    "meta": lambda w: dict(w.meta),
    "k": lambda w: w.pack.constants,
    "band": lambda w: {b.name: b.label(w) for b in w.pack.bands},
    "flag": lambda w: w.flags,
}
