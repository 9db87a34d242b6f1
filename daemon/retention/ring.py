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


class SignalRing:
    """The last `capacity` samples of one signal; when full the oldest is overwritten.

    Timestamps must increase strictly (the caller drops the others); `write` returns how many
    overwritten samples were younger than `horizon_s` before the newest, i.e. lost from the
    promised full-resolution window because the signal came faster than planned.
    """

    def __init__(self, capacity: int, horizon_s: float) -> None:
        self.capacity = capacity
        self.horizon_s = horizon_s
        self._ts = np.empty(capacity, dtype=np.float64)
        self._values = np.empty(capacity, dtype=np.float64)
        self._quality = np.empty(capacity, dtype=np.uint8)
        self._head = 0  # next write position
        self._count = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (allocated up front, so constant)."""
        return self._ts.nbytes + self._values.nbytes + self._quality.nbytes

    @property
    def newest(self) -> float:
        """Timestamp of the newest sample, -inf when empty."""
        if self._count == 0:
            return float("-inf")
        return float(self._ts[(self._head - 1) % self.capacity])

    def write(self, ts: F64, values: F64, quality: U8) -> int:
        """Append samples (newer than `newest`); return the young samples overwritten."""
        n = ts.size
        if n == 0:
            return 0
        cut = self._young_lost(ts)
        if n > self.capacity:
            ts, values, quality = (
                ts[-self.capacity :],
                values[-self.capacity :],
                quality[-self.capacity :],
            )
            n = self.capacity
        first = min(n, self.capacity - self._head)
        for dst, src in ((self._ts, ts), (self._values, values), (self._quality, quality)):
            dst[self._head : self._head + first] = src[:first]
            dst[: n - first] = src[first:]
        self._head = (self._head + n) % self.capacity
        self._count = min(self._count + n, self.capacity)
        return cut

    def _young_lost(self, ts: F64) -> int:
        """Samples this write pushes out that are still inside the horizon."""
        n = ts.size
        overflow = self._count + n - self.capacity
        if overflow <= 0:
            return 0
        horizon = float(ts[-1]) - self.horizon_s
        lost_old = min(overflow, self._count)  # ring samples overwritten, oldest first
        lost = 0
        oldest = (self._head - self._count) % self.capacity
        if lost_old and self._ts[(oldest + lost_old - 1) % self.capacity] >= horizon:
            # Rare (faster than planned): look at the overwritten span in order.
            idx = (oldest + np.arange(lost_old)) % self.capacity
            lost += lost_old - int(np.searchsorted(self._ts[idx], horizon, side="left"))
        lost_new = overflow - lost_old  # samples of this write that never fit
        if lost_new:
            lost += lost_new - int(np.searchsorted(ts[:lost_new], horizon, side="left"))
        return lost

    def window(self, start: float, end: float) -> Samples:
        """Copies of the samples with `start <= ts <= end`, oldest first."""
        if self._count < self.capacity:
            order = slice(0, self._count)
            ts, values, quality = self._ts[order], self._values[order], self._quality[order]
        else:
            ts = np.concatenate((self._ts[self._head :], self._ts[: self._head]))
            values = np.concatenate((self._values[self._head :], self._values[: self._head]))
            quality = np.concatenate((self._quality[self._head :], self._quality[: self._head]))
        i = int(np.searchsorted(ts, start, side="left"))
        j = int(np.searchsorted(ts, end, side="right"))
        return Samples(ts[i:j].copy(), values[i:j].copy(), quality[i:j].copy())
