"""A fixed-size ring of one signal's latest raw samples (numpy, no per-sample objects)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]

BYTES_PER_SAMPLE = 8 + 8 + 1  # ts float64, value float64, quality uint8


class Samples(NamedTuple):
    """Raw samples of one signal in time order."""

    ts: F64
    values: F64
    quality: U8


INITIAL_SAMPLES = 256  # a new ring's size; it doubles, up to its capacity, when needed


class SignalRing:
    """At least `horizon_s` of one signal's latest samples, at most `capacity` of them.

    The arrays start small and double, never past `capacity`, when a write would overwrite a
    sample younger than `horizon_s` before the newest: a slow signal keeps a small ring (1 Hz
    over 300 s: 512 samples, not the 3,001 planned for 10 Hz). When full the oldest sample is
    overwritten. Timestamps must increase strictly (the caller drops the others); `write`
    returns how many overwritten samples were younger than `horizon_s` before the newest,
    i.e. lost from the promised full-resolution window because the signal came faster than
    planned (only possible at `capacity`).
    """

    def __init__(self, capacity: int, horizon_s: float) -> None:
        self.capacity = capacity
        self.horizon_s = horizon_s
        size = min(capacity, INITIAL_SAMPLES)
        self._ts = np.empty(size, dtype=np.float64)
        self._values = np.empty(size, dtype=np.float64)
        self._quality = np.empty(size, dtype=np.uint8)
        self._size = size
        self._head = 0  # next write position
        self._count = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays now (at most `capacity` samples' worth)."""
        return self._ts.nbytes + self._values.nbytes + self._quality.nbytes

    @property
    def newest(self) -> float:
        """Timestamp of the newest sample, -inf when empty."""
        if self._count == 0:
            return float("-inf")
        return float(self._ts[(self._head - 1) % self._size])

    def write(self, ts: F64, values: F64, quality: U8) -> int:
        """Append samples (newer than `newest`); return the young samples overwritten."""
        n = ts.size
        if n == 0:
            return 0
        cut = self._young_lost(ts)
        while cut and self._size < self.capacity:
            self._grow(2 * self._size)
            cut = self._young_lost(ts)
        size = self._size
        if n > size:
            ts, values, quality = ts[-size:], values[-size:], quality[-size:]
            n = size
        first = min(n, size - self._head)
        for dst, src in ((self._ts, ts), (self._values, values), (self._quality, quality)):
            dst[self._head : self._head + first] = src[:first]
            dst[: n - first] = src[first:]
        self._head = (self._head + n) % size
        self._count = min(self._count + n, size)
        return cut

    def _grow(self, want: int) -> None:
        """Move the samples, oldest first, into arrays of `want` samples (at most capacity)."""
        size = min(self.capacity, want)
        ts, values, quality = self._ordered()
        self._ts = np.empty(size, dtype=np.float64)
        self._values = np.empty(size, dtype=np.float64)
        self._quality = np.empty(size, dtype=np.uint8)
        self._ts[: self._count] = ts
        self._values[: self._count] = values
        self._quality[: self._count] = quality
        self._size = size
        self._head = self._count

    def _young_lost(self, ts: F64) -> int:
        """Samples this write pushes out that are still inside the horizon."""
        n = ts.size
        size = self._size
        overflow = self._count + n - size
        if overflow <= 0:
            return 0
        horizon = float(ts[-1]) - self.horizon_s
        lost_old = min(overflow, self._count)  # ring samples overwritten, oldest first
        lost = 0
        oldest = (self._head - self._count) % size
        if lost_old and self._ts[(oldest + lost_old - 1) % size] >= horizon:
            # Rare (faster than planned, or a ring still growing): the overwritten span in order.
            idx = (oldest + np.arange(lost_old)) % size
            lost += lost_old - int(np.searchsorted(self._ts[idx], horizon, side="left"))
        lost_new = overflow - lost_old  # samples of this write that never fit
        if lost_new:
            lost += lost_new - int(np.searchsorted(ts[:lost_new], horizon, side="left"))
        return lost

    def _ordered(self) -> tuple[F64, F64, U8]:
        """The samples held, oldest first (views until the ring has wrapped, then copies)."""
        if self._count < self._size:  # not wrapped yet: oldest at 0 (also after a growth)
            order = slice(0, self._count)
            return self._ts[order], self._values[order], self._quality[order]
        h = self._head
        return (
            np.concatenate((self._ts[h:], self._ts[:h])),
            np.concatenate((self._values[h:], self._values[:h])),
            np.concatenate((self._quality[h:], self._quality[:h])),
        )

    def window(self, start: float, end: float) -> Samples:
        """Copies of the samples with `start <= ts <= end`, oldest first."""
        ts, values, quality = self._ordered()
        i = int(np.searchsorted(ts, start, side="left"))
        j = int(np.searchsorted(ts, end, side="right"))
        return Samples(ts[i:j].copy(), values[i:j].copy(), quality[i:j].copy())
