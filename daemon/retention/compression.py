"""History compression for normal periods: exception reporting (deadband) ahead of swinging door.

Both stages are streaming and exact about their bound. With a total deviation `D` and an
exception share `s`, the deadband uses `E_d = s * D / 2` and the door `E_c = (1 - s) * D`:
linear interpolation between the retained points then differs from every raw point by at most
`2 * E_d + E_c = D` (the deadband keeps the value before each exception, so every skipped run
lies within `E_d` of both of its ends; the door keeps its own points within `E_c` of the
line). No two retained points lie further apart than `max_interval` unless two consecutive
raw samples already do.

Timestamps must increase strictly within a series; `Retention` drops the others before they
get here. The work per call is numpy over the samples plus a Python step per *retained*
point, so steady signals are cheap. Short chunks (up to `SMALL_CHUNK` samples to decide) run
the same arithmetic in plain Python instead: there the fixed cost of each numpy call, paid
per retained point, outweighs the loop (noisy signals retain most samples), and the results
are identical, float for float (tests/test_compression.py compares both paths). A door
still open when a call ends resumes there from its saved slopes instead of scanning its
pending samples again (tests/test_retention_paths.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# Samples the door may hold while it is still open; past this it archives its last feasible
# point early, which keeps the bound and only costs compression.
MAX_PENDING = 1 << 16
_FIRST_WINDOW = 64  # samples examined before widening the look-ahead (x4 each time)
# At most this many samples to decide: plain Python over lists (see the module docstring).
SMALL_CHUNK = 256

_EMPTY = np.empty(0, dtype=np.float64)


def _empty() -> tuple[F64, F64]:
    return _EMPTY.copy(), _EMPTY.copy()


def _first_after(t: F64, origin: float, interval: float) -> int:
    """Index of the first `t` with `t - origin > interval`, as the reader will compute it."""
    i = int(np.searchsorted(t, origin + interval, side="right"))
    # origin + interval rounds; settle on the subtraction the bound is checked with.
    while i > 0 and t[i - 1] - origin > interval:
        i -= 1
    while i < t.size and t[i] - origin <= interval:
        i += 1
    return i


def _late_index(t: list[float], origin: float, interval: float, start: int) -> int:
    """`_first_after` over a list from `start` on: t[i] - origin grows with i."""
    if t[-1] - origin <= interval:
        return len(t)
    return bisect_right(t, interval, start, len(t), key=lambda x: x - origin)


class Deadband:
    """Exception reporting: keep a sample when it leaves `±deviation` of the last kept one.

    With `keep_previous` (the default, as PI interfaces do) the sample before an exception is
    kept too, so that linear interpolation stays within `2 * deviation`; without it this is
    plain deadband, meant to be read back as a held step (error within `deviation`).
    """

    def __init__(self, deviation: float, max_interval: float, keep_previous: bool = True) -> None:
        if deviation < 0 or max_interval <= 0:
            raise ValueError("deadband: deviation must be >= 0 and max_interval > 0")
        self.deviation = deviation
        self.max_interval = max_interval
        self.keep_previous = keep_previous
        self._ref: tuple[float, float] | None = None  # last kept sample
        self._prev: tuple[float, float] | None = None  # last sample seen
        self._prev_kept = False

    def feed(self, ts: F64, values: F64) -> tuple[F64, F64]:
        """Return the samples kept from this chunk (and possibly the last one of the previous)."""
        if ts.size == 0:
            return _empty()
        if ts.size <= SMALL_CHUNK:
            return self._feed_small(ts.tolist(), values.tolist())
        if self._prev is None:
            ext_t, ext_v, start = ts, values, 1
            kept = [0]
            self._ref = (float(ts[0]), float(values[0]))
            ref_idx = 0
        else:
            ext_t = np.concatenate(([self._prev[0]], ts))
            ext_v = np.concatenate(([self._prev[1]], values))
            start, kept = 1, []
            ref_idx = 0 if self._prev_kept else -1
        assert self._ref is not None
        ref_t, ref_v = self._ref
        n = ext_t.size
        p = start
        while p < n:
            j = self._next_event(ext_t, ext_v, p, ref_t, ref_v)
            if j == n:
                break
            if self.keep_previous and j - 1 != ref_idx:
                j -= 1  # keep the value before the exception, then look at j again from it
            kept.append(j)
            ref_idx, ref_t, ref_v = j, float(ext_t[j]), float(ext_v[j])
            p = j + 1
        self._ref = (ref_t, ref_v)
        self._prev = (float(ext_t[-1]), float(ext_v[-1]))
        self._prev_kept = ref_idx == n - 1
        idx = np.asarray(kept, dtype=np.intp)
        return ext_t[idx], ext_v[idx]

    def _feed_small(self, ts: list[float], values: list[float]) -> tuple[F64, F64]:
        """`feed` in plain Python, step for step (short chunks)."""
        if self._prev is None:
            ext_t, ext_v = ts, values
            kept = [0]
            ref_t, ref_v = ts[0], values[0]
            ref_idx = 0
        else:
            ext_t, ext_v = [self._prev[0], *ts], [self._prev[1], *values]
            kept = []
            ref_t, ref_v = self._ref if self._ref is not None else self._prev
            ref_idx = 0 if self._prev_kept else -1
        deviation, interval, keep_previous = self.deviation, self.max_interval, self.keep_previous
        n = len(ext_t)
        j = 1
        while j < n:
            # The next sample to report: late (as `_first_after` decides) or out of the band.
            dv = ext_v[j] - ref_v  # abs() spelled out: this loop runs per sample
            if ext_t[j] - ref_t > interval or dv > deviation or -dv > deviation:
                if keep_previous and j - 1 != ref_idx:
                    j -= 1  # keep the value before the exception, then look at j again from it
                kept.append(j)
                ref_idx, ref_t, ref_v = j, ext_t[j], ext_v[j]
            j += 1
        self._ref = (ref_t, ref_v)
        self._prev = (ext_t[-1], ext_v[-1])
        self._prev_kept = ref_idx == n - 1
        return (
            np.array([ext_t[i] for i in kept], dtype=np.float64),
            np.array([ext_v[i] for i in kept], dtype=np.float64),
        )

    def flush(self) -> tuple[F64, F64]:
        """Keep the last sample seen, so that a reader can interpolate up to it."""
        if self._prev is None or self._prev_kept:
            return _empty()
        self._ref = self._prev
        self._prev_kept = True
        return np.array([self._prev[0]]), np.array([self._prev[1]])

    def _next_event(self, t: F64, v: F64, p: int, ref_t: float, ref_v: float) -> int:
        """Index of the first sample at or after `p` that must be reported (len(t) if none)."""
        n = t.size
        late = _first_after(t, ref_t, self.max_interval)
        width = _FIRST_WINDOW
        while p < late:
            end = min(p + width, late)
            out = np.abs(v[p:end] - ref_v) > self.deviation
            if out.any():
                return p + int(out.argmax())
            p, width = end, width * 4
        return min(n, late)


class SwingingDoor:
    """Swinging-door trending that keeps only real samples and never breaks its bound.

    Classic SDT archives the sample before the door closes even when the line to it leaves
    the band for some sample in between; here the archived sample is the latest one whose
    line from the last archived sample stays within `±deviation` of every sample between.
    """

    def __init__(self, deviation: float, max_interval: float) -> None:
        if deviation < 0 or max_interval <= 0:
            raise ValueError("swinging door: deviation must be >= 0 and max_interval > 0")
        self.deviation = deviation
        self.max_interval = max_interval
        self._anchor: tuple[float, float] | None = None
        self._pend_t = _EMPTY.copy()
        self._pend_v = _EMPTY.copy()
        # The open door over the pending samples, as the last call left it: (deviation, lo,
        # hi, best, samples scanned), so that the next call goes on instead of scanning again.
        self._open: tuple[float, float, float, int, int] | None = None

    @property
    def pending(self) -> int:
        """Samples seen but not yet decided."""
        return int(self._pend_t.size)

    def feed(self, ts: F64, values: F64, force: bool = False) -> tuple[F64, F64]:
        """Return the samples archived now; `force` decides every pending sample."""
        out_t: list[float] = []
        out_v: list[float] = []
        if self._anchor is None and ts.size:
            self._anchor = (float(ts[0]), float(values[0]))
            out_t.append(self._anchor[0])
            out_v.append(self._anchor[1])
            ts, values = ts[1:], values[1:]
        t = np.concatenate((self._pend_t, ts)) if self._pend_t.size else ts
        v = np.concatenate((self._pend_v, values)) if self._pend_v.size else values
        start = 0
        held, self._open = self._open, None
        while start < t.size:
            if t.size - start <= SMALL_CHUNK:
                tl, vl = t.tolist(), v.tolist()
                idx, start = self._archive_small(tl, vl, start, force, held if start == 0 else None)
                out_t += [tl[i] for i in idx]
                out_v += [vl[i] for i in idx]
                break
            overfull = t.size - start > MAX_PENDING
            m = self._next_archive(t, v, start, force or overfull)
            if m is None:
                break
            self._anchor = (float(t[m]), float(v[m]))
            out_t.append(self._anchor[0])
            out_v.append(self._anchor[1])
            start = m + 1
        self._pend_t = t[start:].copy()
        self._pend_v = v[start:].copy()
        return np.asarray(out_t, dtype=np.float64), np.asarray(out_v, dtype=np.float64)

    def flush(self) -> tuple[F64, F64]:
        """Archive everything pending, ending with the last sample seen."""
        return self.feed(_EMPTY, _EMPTY, force=True)

    def _archive_small(
        self,
        t: list[float],
        v: list[float],
        start: int,
        force: bool,
        held: tuple[float, float, float, int, int] | None = None,
    ) -> tuple[list[int], int]:
        """`_next_archive` repeated in plain Python, step for step (short chunks).

        Returns the indices archived, in order, and the first index still undecided. `held`
        is the door this call opens with, when it opens at `start` (0) with that deviation.
        """
        assert self._anchor is not None
        a_t, a_v = self._anchor
        deviation, interval = self.deviation, self.max_interval
        n = len(t)
        out: list[int] = []
        while start < n:
            best = first = start
            if t[start] - a_t <= interval:  # else a raw gap: nothing in between to choose
                lo, hi = -math.inf, math.inf  # slopes that keep every sample so far in band
                if held is not None and held[0] == deviation:
                    _, lo, hi, best, first = held
                held = None
                late = _late_index(t, a_t, interval, start)  # the first the door may not reach
                for i in range(first, late):
                    dt = t[i] - a_t
                    dv = v[i] - a_v
                    # max() and min() spelled out: this loop runs per sample.
                    new_lo = (dv - deviation) / dt
                    if new_lo < lo:  # noqa: PLR1730
                        new_lo = lo
                    new_hi = (dv + deviation) / dt
                    if new_hi > hi:  # noqa: PLR1730
                        new_hi = hi
                    if new_lo > new_hi:
                        break  # the door closes at i
                    if lo <= dv / dt <= hi:
                        best = i  # the line to i stays in the band of every sample before
                    lo, hi = new_lo, new_hi
                else:
                    if late == n and not force:
                        self._open = (deviation, lo, hi, best - start, n - start)
                        break  # the door is still open
            out.append(best)
            a_t, a_v = t[best], v[best]
            start = best + 1
        self._anchor = (a_t, a_v)
        return out, start

    def _next_archive(self, t: F64, v: F64, start: int, force: bool) -> int | None:
        """Index of the next sample to archive, or None while the door is still open."""
        assert self._anchor is not None
        a_t, a_v = self._anchor
        n = t.size
        late = _first_after(t, a_t, self.max_interval)
        if late <= start:
            return start  # a raw gap longer than max_interval: nothing in between to choose
        width = _FIRST_WINDOW
        while True:
            end = min(start + width, n)
            dt = t[start:end] - a_t
            dv = v[start:end] - a_v
            lo = np.maximum.accumulate((dv - self.deviation) / dt)
            hi = np.minimum.accumulate((dv + self.deviation) / dt)
            closed = lo > hi
            limit = start + int(closed.argmax()) if closed.any() else end
            limit = min(limit, late)
            if limit < end or (end == n and force):
                break
            if end == n:
                return None
            width *= 4
        k = limit - start
        slope = dv[:k] / dt[:k]
        feasible = np.ones(k, dtype=np.bool_)
        feasible[1:] = (slope[1:] >= lo[: k - 1]) & (slope[1:] <= hi[: k - 1])
        return start + int(k - 1 - feasible[::-1].argmax())


class Compressor:
    """Deadband then swinging door for one series, within a total `deviation` (see module)."""

    def __init__(self, deviation: float, max_interval: float, exception_share: float = 0.1) -> None:
        if not 0 <= exception_share < 1:
            raise ValueError("compressor: exception_share must be in [0, 1)")
        self._share = exception_share
        self._deadband = Deadband(0.0, max_interval)
        self._door = SwingingDoor(0.0, max_interval)
        self._deviation = 0.0
        self.deviation = deviation

    @property
    def deviation(self) -> float:
        """Total bound on the reconstruction error, in the signal's units."""
        return self._deviation

    @deviation.setter
    def deviation(self, value: float) -> None:
        # Widening keeps every promise made so far; narrowing could break one mid-segment.
        if value < self._deviation:
            raise ValueError("compressor: deviation may only grow")
        self._deviation = value
        self._deadband.deviation = value * self._share / 2
        self._door.deviation = value * (1 - self._share)

    @property
    def pending(self) -> int:
        """Samples held by the door, not yet decided."""
        return self._door.pending

    def feed(self, ts: F64, values: F64) -> tuple[F64, F64]:
        """Return the points retained now, in time order."""
        kt, kv = self._deadband.feed(ts, values)
        return self._door.feed(kt, kv)

    def flush(self) -> tuple[F64, F64]:
        """Retain everything held, up to and including the last sample seen."""
        kt, kv = self._deadband.flush()
        return self._door.feed(kt, kv, force=True)


def reconstruct(kept_t: F64, kept_v: F64, ts: F64, step: bool = False) -> F64:
    """Read retained points back at `ts`: linear interpolation, or a held step."""
    if not step:
        return np.interp(ts, kept_t, kept_v)
    idx = np.clip(np.searchsorted(kept_t, ts, side="right") - 1, 0, kept_t.size - 1)
    return kept_v[idx]
