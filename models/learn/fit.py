"""The fit of a learned model: baseline, spread, tolerance floor and threshold per signal.

The model is a window-mean detector, per signal j over the last W rows:
    contrib_j = (mean(x_j) - mu_j) / (s_j * t_j)        score = max_j |contrib_j|
and a window is anomalous when score > 1. From rows of normal operation:
- mu_j is the median of all full training window means (hop 1);
- s_j is the robust spread of those means (1.4826 x MAD), never below a tolerance floor
  that depends on the signal's ROLE (the table below, or `tolerance_pct` per signal):
  a change smaller than the instrument's accuracy, or than the quantity's healthy wander,
  is not a machine symptom however steady the training rows were;
- a quantised signal (its smallest step between distinct values is at least half its
  standard deviation, e.g. a flow meter reporting whole l/min) gets its resolution as floor;
- t_j = max(MARGIN x the largest |window mean - mu_j| / s_j seen in training, THR_MIN).
mu and s*t become the manifest's normalisation, so the ONNX graph holds no constants.

Rules kept: nothing here is random (the seed is recorded for stochastic fits to come); a
fit never returns NaN, infinity or a zero std (it raises DataError naming the signal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import numpy as np

from edge_agent.core.assets import Role
from edge_agent.core.errors import ConfigError, DataError

ROLES: tuple[str, ...] = get_args(Role)
WINDOW = 15  # rows per window (15 s at 1 Hz): long enough to average noise, short to react
MIN_WINDOWS = 100  # full windows a fit needs, so that the median and MAD mean something
MAD_TO_SIGMA = 1.4826
MARGIN = 1.3  # threshold = 1.3 x the largest deviation of a training window, ...
THR_MIN = 4.0  # ... and never under 4 spreads
QUANT_RATIO = 0.5  # quantised when the smallest step >= 0.5 x the signal's standard deviation
STEP_SPLITS = 8  # the step check compares the training rows before and after 7 split points
# ... and warns above 6 spreads: 1.5 x the narrowest alarm distance. SKAB's healthy file
# reaches 4.4 with 1800 to 9000 training rows; a pump starting within them, 43.
STEP_WARN = 6.0
ADAPT_ALPHA = 0.002  # baseline EWMA rate per window while idle (manifest `adapt.alpha`)
ADAPT_BELOW = 0.8  # ... while score < 0.8 x threshold (manifest `adapt.below`)

FloorKind = Literal["relative", "absolute"]


class Tolerance(NamedTuple):
    """A role's tolerance floor: a fraction of |level|, or an amount in the role's unit."""

    kind: FloorKind
    floor: float


# Measured and argued in the research (SKAB, /work/scratch/skab2); comments say why.
ROLE_TABLE: dict[str, Tolerance] = {
    # accelerometer + RMS converter: sensitivity repeatability / linearity ~1 % of reading
    "vibration": Tolerance("relative", 0.01),
    # current transducer class 3 at partial load ~3 %; load current wanders with the supply
    "current": Tolerance("relative", 0.03),
    # healthy mains wanders +-3 % within an hour (EN 50160: +-10 % over a week)
    "voltage": Tolerance("relative", 0.03),
    # electromagnetic / vortex flow meter: +-0.5 % of reading
    "flow": Tolerance("relative", 0.005),
    # transmitter 0.25-0.5 % of span; span unknown: 0.01 bar (0.5 % of a 2 bar span)
    "pressure": Tolerance("absolute", 0.01),
    # slow thermal state: 2 K (class-2 thermocouple +-2.5 K; healthy drift of a few K/h),
    # so only a >= 8 K excursion of the window mean alarms; slow drift goes to the baseline
    "temperature": Tolerance("absolute", 2.0),
    # encoder/tacho 0.1 %, but induction-motor slip moves with load
    "speed": Tolerance("relative", 0.01),
    # an unknown quantity: 2 % of reading
    "other": Tolerance("relative", 0.02),
}
ROLE_UNIT = {"pressure": "bar", "temperature": "K"}  # the unit of an absolute floor
# Factor from a unit to its role's unit (a temperature difference: degC and K alike).
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "pressure": {"bar": 1.0, "mbar": 1e-3, "pa": 1e-5, "kpa": 0.01, "mpa": 10.0, "psi": 0.0689476},
    "temperature": {"k": 1.0, "degc": 1.0, "c": 1.0, "degf": 5 / 9, "f": 5 / 9},
}

Progress = Callable[[float, str], None]
Where = Callable[[int], str]


@dataclass(frozen=True)
class FitOptions:
    """The fit's choices beyond rows, signals and roles; each has a default."""

    units: Mapping[str, str] = field(default_factory=dict)  # signal -> unit ("" unknown)
    tolerance_pct: Mapping[str, float] = field(default_factory=dict)  # signal -> floor in %
    rate_hz: float = 1.0
    window: int = WINDOW
    seed: int = 0  # recorded; this fit is not random


@dataclass(frozen=True)
class SignalFit:
    """What the fit decided for one signal, and why (for the report and the manifest)."""

    name: str
    role: str
    unit: str
    floor_kind: FloorKind
    floor: float  # tolerance floor in the signal's unit, raised to the resolution if quantised
    quantised: bool
    resolution: float  # smallest step between distinct training values
    spread: float  # robust spread of the training window means
    limited_by: Literal["spread", "floor"]  # which of the two set s
    s: float
    t: float  # threshold, in units of s
    mean: float  # baseline mu
    std: float  # s * t: one unit of the model's input


@dataclass(frozen=True)
class Fitted:
    """A fitted learned model: normalisation, per-signal diagnostics and warnings."""

    signals: tuple[str, ...]
    roles: tuple[str, ...]
    units: tuple[str, ...]
    rate_hz: float
    window: int
    seed: int
    rows: int
    windows: int
    mean: np.ndarray  # float64 [S]: baseline mu
    std: np.ndarray  # float64 [S]: s * t
    per_signal: tuple[SignalFit, ...]
    warnings: tuple[str, ...]

    def reference(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's maths in numpy on raw windows [N, W, S]: (score [N], contrib [N, S])."""
        contrib = ((np.asarray(windows, np.float64) - self.mean) / self.std).mean(axis=1)
        return np.abs(contrib).max(axis=1), contrib


def min_rows(window: int = WINDOW) -> int:
    """Consecutive rows a fit needs at least."""
    return MIN_WINDOWS + window - 1


def _row(i: int) -> str:
    return f"row {i + 1}"


def check_rows(
    rows: np.ndarray,
    signals: Sequence[str],
    *,
    window: int = WINDOW,
    breaks: Sequence[int] = (),
    where: Where = _row,
) -> None:
    """Raise DataError unless `rows` [T, S] can make a model; `where(i)` names row i."""
    if rows.ndim != 2 or rows.shape[1] != len(signals):
        raise ConfigError(f"rows of shape {rows.shape} do not match {len(signals)} signals")
    bad = ~np.isfinite(rows) | (np.abs(rows) > np.finfo(np.float32).max)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{where(i)}, signal {signals[j]!r}: {rows[i, j]} is not a reading")
    n = rows.shape[0]
    pieces = np.diff([0, *breaks, n])
    need = min_rows(window)
    if n == 0 or int(np.maximum(pieces - window + 1, 0).sum()) < MIN_WINDOWS:
        span = f"{where(0)} to {where(n - 1)}" if n else "the input"
        raise DataError(
            f"too few rows: {span} holds {n} rows in {len(pieces)} piece(s); a fit needs at "
            f"least {need} consecutive rows ({MIN_WINDOWS} windows of {window} rows)"
        )
    for j, name in enumerate(signals):
        if rows[:, j].min() == rows[:, j].max():
            raise DataError(
                f"signal {name!r} is constant ({rows[0, j]:g}) from {where(0)} to "
                f"{where(n - 1)}: a constant signal cannot make a model (leave it out of "
                "the signals, or check the sensor)"
            )


def window_means(
    rows: np.ndarray, window: int, breaks: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Means of every full window (hop 1) that crosses no break [M, S], and each one's last row."""
    parts, ends = [], []
    for lo, hi in zip([0, *breaks], [*breaks, rows.shape[0]], strict=True):
        seg = rows[lo:hi]
        if seg.shape[0] < window:
            continue
        centre = np.median(seg, axis=0)  # centred sums keep float64 exact over a day of rows
        c = np.cumsum(np.vstack([np.zeros((1, seg.shape[1])), seg - centre]), axis=0)
        parts.append((c[window:] - c[:-window]) / window + centre)
        ends.append(np.arange(lo + window - 1, hi))
    return np.vstack(parts), np.concatenate(ends)


def resolution(x: np.ndarray) -> float:
    """Smallest nonzero step between distinct values of x (0 with fewer than 2 values)."""
    steps = np.diff(np.unique(np.round(np.asarray(x, np.float64), 9)))
    return float(steps.min()) if steps.size else 0.0


def _tolerance(
    name: str, role: str, unit: str, pct: float | None, warnings: list[str]
) -> Tolerance:
    """The signal's floor: its own `tolerance_pct`, else its role's, in the signal's unit."""
    if pct is not None:
        if not (np.isfinite(pct) and pct > 0):
            raise ConfigError(f"signal {name!r}: tolerance_pct={pct} must be above zero")
        return Tolerance("relative", pct / 100.0)
    tol = ROLE_TABLE[role]
    if tol.kind == "relative":
        return tol
    key = unit.strip().lower().replace("°", "deg")
    factor = UNIT_FACTORS[role].get(key)
    if factor is None:
        said = f"unit {unit!r} is not one of {', '.join(UNIT_FACTORS[role])}" if unit else "no unit"
        warnings.append(
            f"signal {name!r} ({role}): {said}; its tolerance floor {tol.floor:g} is taken in "
            f"its own unit as if it were {ROLE_UNIT[role]}"
        )
        factor = 1.0
    return Tolerance("absolute", tol.floor / factor)


def _step_warnings(
    m: np.ndarray,
    ends: np.ndarray,
    floors: np.ndarray,
    std: np.ndarray,
    signals: Sequence[str],
    roles: Sequence[str],
    units: Sequence[str],
    where: Where,
) -> list[str]:
    """Warn of each signal whose window means shift by more than an alarm needs.

    At each split point the medians before and after are compared, in units of the larger
    spread of the two sides around their own medians (a step inflates the spread of the
    whole, which would hide it). A step anywhere but in the first or last eighth of the
    rows shows; a healthy wander within the tolerance floor does not.
    """
    n = m.shape[0]
    best = np.zeros(m.shape[1])
    at = np.zeros(m.shape[1], int)
    size = np.ones(m.shape[1])
    for k in (n * i // STEP_SPLITS for i in range(1, STEP_SPLITS)):
        left, right = np.median(m[:k], axis=0), np.median(m[k:], axis=0)
        spread = MAD_TO_SIGMA * np.maximum(
            np.median(np.abs(m[:k] - left), axis=0), np.median(np.abs(m[k:] - right), axis=0)
        )
        s = np.maximum(spread, floors)
        shift = np.abs(right - left) / s
        more = shift > best
        best[more], at[more], size[more] = shift[more], k, (right - left)[more]
    return [
        f"signal {signals[j]!r} ({roles[j]}): its level shifts by {size[j]:+.4g} "
        f"{units[j]} around {where(int(ends[at[j]]))}, {best[j]:.1f} spreads where an alarm "
        f"needs {THR_MIN:g}: learning on data that already holds an anomaly? Its alarm "
        f"distance widened to {std[j]:.4g}; fit on a period of normal operation only"
        for j in (int(k) for k in np.flatnonzero(best > STEP_WARN))
    ]


def fit(
    rows: np.ndarray,
    signals: Sequence[str],
    roles: Sequence[str],
    options: FitOptions | None = None,
    *,
    breaks: Sequence[int] = (),
    where: Where | None = None,
    progress: Progress | None = None,
) -> Fitted:
    """Fit rows [T, S] of normal operation; `breaks` start new pieces windows do not cross.

    `where(i)` names row i in messages (default `row i+1`); progress gets (fraction, stage).
    """
    say = progress or (lambda _f, _s: None)
    where = where or _row
    opt = options or FitOptions()
    window = opt.window
    if not signals:
        raise ConfigError("no signals to fit")
    if len(roles) != len(signals):
        raise ConfigError(f"{len(roles)} roles for {len(signals)} signals")
    say(0.0, "checking rows")
    x = np.asarray(rows, np.float64)
    role_list = [str(r) for r in roles]
    unit_list = [opt.units.get(name, "") for name in signals]
    for name, role in zip(signals, role_list, strict=True):
        if role not in ROLE_TABLE:
            raise ConfigError(f"signal {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    if not opt.rate_hz > 0 or window < 2:
        raise ConfigError(f"rate_hz={opt.rate_hz} must be above zero and window={window} above 1")
    check_rows(x, signals, window=window, breaks=breaks, where=where)
    say(0.2, "window means")
    m, ends = window_means(x, window, breaks)
    say(0.4, "baseline and spread")
    mu = np.median(m, axis=0)
    spread = MAD_TO_SIGMA * np.median(np.abs(m - mu), axis=0)
    level = np.abs(np.median(x, axis=0))
    warnings: list[str] = []
    say(0.6, "tolerances")
    tols, floors, res, quant = [], np.zeros(len(signals)), np.zeros(len(signals)), []
    for j, name in enumerate(signals):
        pct = opt.tolerance_pct.get(name)
        tol = _tolerance(name, role_list[j], unit_list[j], pct, warnings)
        floors[j] = tol.floor * level[j] if tol.kind == "relative" else tol.floor
        res[j] = resolution(x[:, j])
        quant.append(bool(res[j] >= QUANT_RATIO * x[:, j].std()))
        if quant[j]:
            floors[j] = max(floors[j], res[j])
        tols.append(tol)
    s = np.maximum(spread, floors)
    if not (s > 0).all():
        j = int(np.flatnonzero(~(s > 0))[0])
        raise DataError(
            f"signal {signals[j]!r} ({role_list[j]}): its window means do not vary and its "
            f"tolerance floor is zero (a relative floor of a level of "
            f"{np.median(x[:, j]):g}): give it a role with an absolute floor"
        )
    say(0.8, "thresholds")
    t = np.maximum(MARGIN * (np.abs(m - mu) / s).max(axis=0), THR_MIN)
    std = s * t
    _refuse_unusable(mu, std, signals)
    say(0.9, "checking for steps")
    warnings += _step_warnings(m, ends, floors, std, signals, role_list, unit_list, where)
    per = tuple(
        SignalFit(
            name=name,
            role=role_list[j],
            unit=unit_list[j],
            floor_kind=tols[j].kind,
            floor=float(floors[j]),
            quantised=quant[j],
            resolution=float(res[j]),
            spread=float(spread[j]),
            limited_by="spread" if spread[j] >= floors[j] else "floor",
            s=float(s[j]),
            t=float(t[j]),
            mean=float(mu[j]),
            std=float(std[j]),
        )
        for j, name in enumerate(signals)
    )
    say(1.0, "fitted")
    return Fitted(
        signals=tuple(signals),
        roles=tuple(role_list),
        units=tuple(unit_list),
        rate_hz=float(opt.rate_hz),
        window=window,
        seed=opt.seed,
        rows=int(x.shape[0]),
        windows=int(m.shape[0]),
        mean=mu,
        std=std,
        per_signal=per,
        warnings=tuple(warnings),
    )


def _refuse_unusable(mu: np.ndarray, std: np.ndarray, signals: Sequence[str]) -> None:
    """The model runs in float32: its mean and 1/std must be finite there, std above zero."""
    with np.errstate(over="ignore", divide="ignore"):
        mu32, std32 = mu.astype(np.float32), std.astype(np.float32)
        inv = (1.0 / std.astype(np.float64)).astype(np.float32)
    ok = np.isfinite(mu32) & np.isfinite(std32) & (std32 > 0) & np.isfinite(inv)
    if not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"signal {signals[j]!r}: baseline {mu[j]:g} and alarm distance {std[j]:g} do not "
            "fit in float32 (scale the signal to a sensible unit)"
        )
