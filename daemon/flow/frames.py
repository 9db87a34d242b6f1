"""Per-asset frames: readings aligned onto a fixed-rate grid, cut into sliding windows.

Time is event time (the readings' timestamps), so a simulator may run faster than real
time. The row for grid tick t holds, per signal, the last GOOD value with timestamp <= t; it
is emitted when the first reading later than t arrives. A signal that has not had a good
value for `stale_after_s` (or whose latest value was not GOOD) is NaN in the row, and a
window holding a NaN is not scored: a bad value never enters the model as a good one.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.flow.settings import FrameSettings

log = structlog.get_logger(__name__)
_TS = operator.itemgetter(2)  # Reading.ts


class Window(NamedTuple):
    """`window` rows of raw values [W, S] of one asset, the last row at grid time `ts`."""

    asset: str
    ts: float
    values: np.ndarray


class _AssetFrame:
    __slots__ = ("filled", "latest", "next_tick", "pos", "ring", "since_emit", "updated")

    def __init__(self, n_signals: int, window: int, first_tick: int) -> None:
        self.latest = [math.nan] * n_signals
        self.updated = [-math.inf] * n_signals
        self.ring = np.empty((window, n_signals), dtype=np.float32)
        self.pos = 0
        self.filled = 0
        self.since_emit = 0
        self.next_tick = first_tick


class FrameBuilder:
    """Aligns each asset's signals onto the model's grid and queues complete windows."""

    def __init__(
        self,
        signals: Sequence[str],
        rate_hz: float,
        window: int,
        hop: int,
        settings: FrameSettings,
    ) -> None:
        self.signals = tuple(signals)
        self.rate_hz = rate_hz
        self.window = window
        self.hop = hop
        self._index = {name: i for i, name in enumerate(self.signals)}
        self.settings = settings
        self._assets: dict[str, _AssetFrame] = {}
        self._pending: deque[Window] = deque()
        self._dropped = {
            reason: metrics.READINGS_DROPPED.labels(reason)
            for reason in ("unknown_signal", "too_many_assets", "late", "not_good")
        }

    @property
    def pending(self) -> int:
        """Windows waiting to be taken."""
        return len(self._pending)

    def ingest(self, readings: Iterable[Reading]) -> None:
        """Add a batch of readings to their frames.

        A batch is put in time order first: an OPC UA publish response groups its
        notifications by monitored item, so one signal's later samples may come before
        another's earlier ones. Across batches, readings must arrive in time order per asset;
        a reading older than the last emitted grid tick is dropped as late.
        """
        readings = sorted(readings, key=_TS)  # timsort: linear on already ordered MQTT batches
        index = self._index
        assets = self._assets
        rate = self.rate_hz
        for r in readings:
            sig = index.get(r.signal)
            if sig is None:
                self._dropped["unknown_signal"].inc()
                continue
            frame = assets.get(r.asset)
            if frame is None:
                frame = self._new_frame(r.asset, r.ts)
                if frame is None:
                    continue
            tick_ts = frame.next_tick / rate
            if r.ts > tick_ts:
                self._advance(r.asset, frame, r.ts)
            elif r.ts <= (frame.next_tick - 1) / rate:
                # Its tick's row has gone out already; holding it now would misdate it.
                self._dropped["late"].inc()
                continue
            if r.quality is Quality.GOOD:
                frame.latest[sig] = r.value
                frame.updated[sig] = r.ts
            else:
                frame.latest[sig] = math.nan
                self._dropped["not_good"].inc()

    def take(self) -> list[Window]:
        """Remove and return the queued windows, oldest first."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def forget(self, asset: str) -> None:
        """Drop an asset's frame (for example when it is decommissioned)."""
        self._assets.pop(asset, None)

    def _new_frame(self, asset: str, ts: float) -> _AssetFrame | None:
        if len(self._assets) >= self.settings.max_assets:
            self._dropped["too_many_assets"].inc()
            return None
        # The first tick at or after the first reading: nothing before it is known.
        frame = _AssetFrame(len(self.signals), self.window, math.ceil(ts * self.rate_hz))
        self._assets[asset] = frame
        return frame

    def _advance(self, asset: str, frame: _AssetFrame, ts: float) -> None:
        """Emit a row for every tick strictly before `ts`."""
        rate = self.rate_hz
        last_tick = math.ceil(ts * rate) - 1
        if (last_tick - frame.next_tick) / rate > self.settings.max_gap_s:
            log.info(
                "frame restarted after a gap",
                asset=asset,
                gap_s=round((last_tick - frame.next_tick) / rate, 3),
            )
            frame.filled = 0
            frame.since_emit = 0
            frame.next_tick = last_tick
        stale_after = self.settings.stale_after_s
        for tick in range(frame.next_tick, last_tick + 1):
            tick_ts = tick / rate
            row = frame.ring[frame.pos]
            for i, value in enumerate(frame.latest):
                row[i] = value if tick_ts - frame.updated[i] <= stale_after else math.nan
            frame.pos = (frame.pos + 1) % self.window
            frame.filled += 1
            frame.since_emit += 1
            if frame.filled >= self.window and frame.since_emit >= self.hop:
                frame.since_emit = 0
                self._emit(asset, tick_ts, frame)
        frame.next_tick = last_tick + 1

    def _emit(self, asset: str, ts: float, frame: _AssetFrame) -> None:
        values = np.concatenate((frame.ring[frame.pos :], frame.ring[: frame.pos]))
        if np.isnan(values).any():
            metrics.WINDOWS.labels("incomplete").inc()
            return
        if len(self._pending) >= self.settings.max_pending_windows:
            self._pending.popleft()
            metrics.WINDOWS.labels("dropped").inc()
        self._pending.append(Window(asset, ts, values))
