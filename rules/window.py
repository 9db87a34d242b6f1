"""One window as the rules read it: its values built root by root, a CEL context only if asked.

Converting Python values into CEL is the advisor's main cost (a dict of eight numbers takes
tens of microseconds, all five signals' statistics over a hundred), and even building the
values as Python dicts costs more than settling every guard. So a window keeps the
`WindowResult` and builds nothing up front: guards read the result directly (rules/guards.py),
a root of the values (`stats`, `probs`, `band`, ...) is built when something first reads it,
and a root goes into CEL only when a condition's CEL part names it. The constants (`k`) go
into CEL once per pack: the advisor keeps one `Scope` and refills the window roots of its
context as each window's conditions ask for them.

Roles (a signal's kind: vibration, flow, ...) let a pack reason without naming signals, so
one pack serves every machine whose model states them (a learned model does). `role.<role>`
is the role's signal with the largest |contribution| and that contribution; every role of
the vocabulary is there, one the model lacks with direction `absent` and contribution 0.
A direction is `up` or `down` from |contribution| >= STEADY_BELOW (half the way to the
signal's alarm limit on a learned model), else `steady`; `moving` counts the signals past
that cut. `lead` is the signal with the largest |contribution|, up (>= 0) or down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, get_args

from edge_agent.core.assets import Role
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules.celrt import cel

if TYPE_CHECKING:
    from edge_agent.rules.parts import RulePack

# The roots of the raising window a clear or escalate condition may read as `at_raise`.
RAISED = ("stats", "contrib", "probs", "band", "flag", "score", "anomalous", "lead", "role")
ROLES: tuple[str, ...] = get_args(Role)
# |contribution| from which a signal counts as moving (up or down), else steady.
STEADY_BELOW = 0.5
DIRECTIONS = ("up", "down", "steady", "absent")
ROLE_FIELDS = ("signal", "contrib", "direction", "change_pct", "mean", "baseline")
LEAD_FIELDS = ("signal", "role", *ROLE_FIELDS[1:])


class Roles:
    """The role of each signal of a model, and the signals of each role, in signal order."""

    __slots__ = ("of", "signals")

    def __init__(self, signals: Sequence[str], roles: Sequence[str] | None) -> None:
        if roles is None:
            self.of: dict[str, str] = {}
        else:
            if len(roles) != len(signals):
                raise ConfigError(f"{len(roles)} roles for {len(signals)} signals ({signals})")
            odd = [f"{s!r}: {r!r}" for s, r in zip(signals, roles, strict=True) if r not in ROLES]
            if odd:
                known = ", ".join(ROLES)
                raise ConfigError(f"roles: {', '.join(odd)} is not a role ({known})")
            self.of = dict(zip(signals, roles, strict=True))
        self.signals = {r: tuple(s for s in signals if self.of.get(s) == r) for r in ROLES}


NO_ROLES = Roles((), None)


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

    __slots__ = (
        "_built",
        "_scope",
        "at_raise",
        "classes",
        "flags",
        "meta",
        "pack",
        "result",
        "roles",
    )

    def __init__(
        self,
        result: WindowResult,
        classes: Sequence[str],
        meta: Mapping[str, object],
        pack: RulePack,
        scope: Scope | None = None,
        roles: Roles = NO_ROLES,
    ) -> None:
        self.result = result
        self.classes = classes
        self.meta = meta
        self.pack = pack
        self._scope = scope
        self.roles = roles
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

    def role(self, role: str) -> Mapping[str, object]:
        """`role.<role>`: its strongest signal and that contribution (KeyError: no such role)."""
        roles = self["role"]
        assert isinstance(roles, dict)
        entry: Mapping[str, object] = roles[role]
        return entry

    def lead(self) -> Mapping[str, object]:
        """`lead`: the signal with the largest |contribution|, its role and direction."""
        lead = self["lead"]
        assert isinstance(lead, dict)
        return lead

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
                context.add_variable(root, _no_nan(self.at_raise))
            elif root not in scope.pushed:
                value = self[root]
                context.add_variable(root, _no_nan(value) if root == "stats" else value)
                scope.pushed.add(root)
        return context


def _no_nan(value: object) -> object:
    """`value` with NaN as null, for CEL.

    The CEL runtime refuses NaN in every operation ("No such overload"), so a condition on
    a baseline not learnt yet (a fresh gate, after a restart) could never hold; as null it
    is testable (`x == null || ...`), like the role fields.
    """
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    return value


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


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # CEL and JSON have no NaN: null


def direction(contrib: float) -> str:
    """`up`, `down` or `steady` for a signed contribution."""
    if contrib >= STEADY_BELOW:
        return "up"
    return "down" if contrib <= -STEADY_BELOW else "steady"


def _signal(w: Window, signal: str, contrib: float) -> dict[str, object]:
    """A signal's contribution and statistics, as `role.<role>` and `lead` have them."""
    st = w.result.stats.get(signal)
    return {
        "signal": signal,
        "contrib": contrib,
        "direction": direction(contrib),
        "change_pct": _finite(st.change_pct) if st else None,
        "mean": _finite(st.mean) if st else None,
        "baseline": _finite(st.baseline) if st else None,
    }


_ABSENT: dict[str, object] = {
    "signal": "",
    "contrib": 0.0,
    "direction": "absent",
    "change_pct": None,
    "mean": None,
    "baseline": None,
}


def _role(w: Window) -> dict[str, dict[str, object]]:
    contrib = w.result.contrib
    out: dict[str, dict[str, object]] = {}
    for role, signals in w.roles.signals.items():
        best, strongest = "", 0.0
        for signal in signals:
            value = contrib.get(signal)
            if value is not None and (not best or abs(value) > abs(strongest)):
                best, strongest = signal, float(value)
        out[role] = _signal(w, best, strongest) if best else dict(_ABSENT)
    return out


def _lead(w: Window) -> dict[str, object]:
    contrib = w.result.contrib
    if not contrib:
        return dict.fromkeys(LEAD_FIELDS) | {"signal": "?", "role": "?", "direction": "?"}
    signal = max(contrib, key=lambda s: abs(contrib[s]))  # the first of the largest
    value = float(contrib[signal])
    lead = _signal(w, signal, value)
    # The lead is the anomaly's side of the signal, whatever its size: up or down.
    lead["direction"] = "up" if value >= 0 else "down"
    lead["role"] = w.roles.of.get(signal, "?")
    return lead


def _moving(w: Window) -> int:
    return sum(1 for v in w.result.contrib.values() if abs(v) >= STEADY_BELOW)


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
    "lead": _lead,
    "role": _role,
    "moving": _moving,
}
