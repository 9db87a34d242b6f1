"""The rows an asset records while it learns: its profile's signals on the grid, bounded.

The rows are what the asset's frames would put in its windows: the same `FrameBuilder`,
with windows of one row, so a reading reaches a learned model's fit exactly as it will reach
its scoring (last good value held, stale or bad values leave the row out). A row left out,
or a jump in time, starts a new piece: the fit never puts a window across the join. The
recording holds at most `need` rows (the profile's period at its rate, itself bounded by a
setting) and is complete when it has them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.core.assets import Profile
from edge_agent.core.readings import Reading
from edge_agent.daemon.flow.frames import FrameBuilder
from edge_agent.daemon.flow.settings import FrameSettings

CHUNK_ROWS = 1024  # the row buffer grows by this much, up to `need`


class Recording:
    """One asset's rows of normal operation on its profile's grid."""

    def __init__(self, profile: Profile, need: int, frames: FrameSettings) -> None:
        if need < 1:
            raise ValueError(f"a recording needs at least one row, not {need}")
        self.profile = profile
        self.need = need
        self._period = 1.0 / profile.rate_hz
        self._frames = FrameBuilder(profile.signal_names, profile.rate_hz, 1, 1, frames)
        self._rows = np.empty((min(need, CHUNK_ROWS), len(profile.signals)), np.float32)
        self.count = 0
        self.breaks: list[int] = []
        self.first_ts: float | None = None
        self.last_ts: float | None = None

    @property
    def progress(self) -> float:
        """Fraction of the rows needed that are recorded."""
        return self.count / self.need

    @property
    def complete(self) -> bool:
        """Whether the learning period is recorded."""
        return self.count >= self.need

    @property
    def rows(self) -> np.ndarray:
        """The rows recorded so far [T, S] (a view)."""
        return self._rows[: self.count]

    def ingest(self, readings: Sequence[Reading]) -> None:
        """Add a batch of the asset's readings; rows past the period are not kept."""
        frames = self._frames
        frames.ingest(readings)
        if not frames.pending:
            return
        for w in frames.take():
            if self.count >= self.need:
                return
            if self.last_ts is not None and w.ts - self.last_ts > 1.5 * self._period:
                self.breaks.append(self.count)
            if self.first_ts is None:
                self.first_ts = w.ts
            self.last_ts = w.ts
            if self.count == self._rows.shape[0]:
                grown = min(self.need, self.count + CHUNK_ROWS)
                self._rows = np.resize(self._rows, (grown, self._rows.shape[1]))
            self._rows[self.count] = w.values[0]
            self.count += 1
