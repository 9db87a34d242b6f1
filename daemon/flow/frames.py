"""Per-asset frames: readings aligned onto a fixed-rate grid, cut into sliding windows.

Time is event time (the readings' timestamps), so a simulator may run faster than real
time. The row for grid tick t holds, per signal, the last GOOD value with timestamp <= t; it
is emitted when the first reading later than t arrives. A signal that has not had a good
value for `stale_after_s` (or whose latest value was not GOOD) is NaN in the row, and a
window holding a NaN is not scored: a bad value never enters the model as a good one.

No single reading moves an asset's clock: a reading more than `max_gap_s` ahead of the
asset's grid is dropped (`implausible_ts`) unless another reading near its time confirms the
jump, which then restarts the frame. Assets are bounded (`max_assets`, a reading of one more
dropped as `too_many_assets`), and an asset that sent nothing for `asset_idle_s` of wall
time is forgotten, so a flood of names holds no slot for long. A signal no model reads is
counted (`unknown_signal`) and logged, one line per interval.
"""

from __future__ import annotations

import math
import operator
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.flow.settings import FrameSettings

log = structlog.get_logger(__name__)
_TS = operator.itemgetter(2)  # Reading.ts
_LOG_INTERVAL_S = 60.0  # one line per kind of drop and asset/signal per minute at most


class Window(NamedTuple):
    """`window` rows of raw values [W, S] of one asset, the last row at grid time `ts`."""

    asset: str
    ts: float
    values: np.ndarray


class _AssetFrame:
    __slots__ = (
        "filled",
        "held",
        "last_ts",
        "latest",
        "next_tick",
        "pos",
        "ring",
        "rows",
        "seen",
        "since_emit",
        "tick_ts",
        "updated",
    )

    def __init__(
        self, n_signals: int, window: int, first_tick: int, seen: float, rate: float
    ) -> None:
        self.latest = [math.nan] * n_signals
        self.updated = [-math.inf] * n_signals
        self.ring = np.empty((window, n_signals), dtype=np.float32)
        self.pos = 0  # where the first of `rows` goes in the ring
        self.rows: list[list[float]] = []  # rows not yet written to the ring (< window + hop)
        self.filled = 0
        self.since_emit = 0
        self.next_tick = first_tick
        self.tick_ts = first_tick / rate  # time of next_tick
        self.last_ts = (first_tick - 1) / rate  # time of the last tick emitted
        self.seen = seen  # monotonic time of the latest reading
        self.held: float | None = None  # a jump's time, waiting for a reading to confirm it


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
            for reason in (
                "unknown_signal",
                "too_many_assets",
                "late",
                "not_good",
                "implausible_ts",
            )
        }
        self._limited = RateLimited(_LOG_INTERVAL_S)
        self._next_sweep = 0.0
        self._tracked = metrics.ASSETS_TRACKED.labels("frames")
        self._evicted = metrics.ASSETS_EVICTED.labels("frames", "idle")

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
        max_gap = self.settings.max_gap_s
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        good = Quality.GOOD
        name, frame = "", None  # the last reading's asset and frame: MQTT sends them in runs
        for r in readings:
            asset, signal, ts, value, quality = r
            sig = index.get(signal)
            if sig is None:
                self._unknown(r)
                continue
            if asset != name or frame is None:
                frame = self._frame(asset, ts, now)
                if frame is None:
                    continue
                name = asset
            if ts > frame.tick_ts:
                if ts - frame.tick_ts > max_gap and not self._confirmed(frame, r):
                    continue
                self._advance(asset, frame, ts)
            elif ts <= frame.last_ts:
                # Its tick's row has gone out already; holding it now would misdate it.
                self._dropped["late"].inc()
                continue
            if quality is good:
                frame.latest[sig] = value
                frame.updated[sig] = ts
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
        if self._assets.pop(asset, None) is not None:
            self._tracked.dec()

    def _frame(self, asset: str, ts: float, now: float) -> _AssetFrame | None:
        """The asset's frame (made on first sight), marked seen at `now`; None: no room."""
        frame = self._assets.get(asset)
        if frame is None:
            frame = self._new_frame(asset, ts, now)
            if frame is None:
                return None
        frame.seen = now
        return frame

    def _new_frame(self, asset: str, ts: float, now: float) -> _AssetFrame | None:
        if len(self._assets) >= self.settings.max_assets:
            if now >= self._next_sweep:  # not on every reading of a flood: a scan is O(assets)
                self._sweep(now)
            if len(self._assets) >= self.settings.max_assets:
                self._dropped["too_many_assets"].inc()
                if (held := self._limited.allow("too_many_assets")) is not None:
                    log.warning(
                        "readings_dropped",
                        reason="too_many_assets",
                        asset=asset[:200],
                        max_assets=self.settings.max_assets,
                        action="raise EDGE_FRAMES__MAX_ASSETS, or wait: assets idle for "
                        f"EDGE_FRAMES__ASSET_IDLE_S={self.settings.asset_idle_s:g} are forgotten",
                        held_back=held,
                    )
                return None
        # The first tick at or after the first reading: nothing before it is known.
        frame = _AssetFrame(
            len(self.signals), self.window, math.ceil(ts * self.rate_hz), now, self.rate_hz
        )
        self._assets[asset] = frame
        self._tracked.inc()
        return frame

    def _sweep(self, now: float) -> None:
        """Forget the assets that sent nothing for `asset_idle_s` (wall clock)."""
        idle = self.settings.asset_idle_s
        self._next_sweep = now + min(idle / 4, 60.0)
        gone = [a for a, f in self._assets.items() if now - f.seen > idle]
        for asset in gone:
            del self._assets[asset]
        if gone:
            self._tracked.dec(len(gone))
            self._evicted.inc(len(gone))
            log.info("assets_forgotten", part="frames", idle_s=idle, count=len(gone))

    def _confirmed(self, frame: _AssetFrame, r: Reading) -> bool:
        """Whether a jump beyond max_gap_s to `r.ts` is confirmed by the jump held before."""
        held = frame.held
        if held is not None and abs(r.ts - held) <= self.settings.max_gap_s:
            return True
        frame.held = r.ts
        self._dropped["implausible_ts"].inc()
        if (n := self._limited.allow(f"implausible_ts:{r.asset}")) is not None:
            log.warning(
                "readings_dropped",
                reason="implausible_ts",
                asset=r.asset,
                signal=r.signal,
                ts=r.ts,
                grid_ts=frame.next_tick / self.rate_hz,
                detail="more than EDGE_FRAMES__MAX_GAP_S ahead; held until another reading "
                "confirms the new time",
                held_back=n,
            )
        return False

    def _unknown(self, r: Reading) -> None:
        self._dropped["unknown_signal"].inc()
        if (held := self._limited.allow(f"unknown_signal:{r.signal}")) is not None:
            log.warning(
                "readings_dropped",
                reason="unknown_signal",
                asset=r.asset[:200],
                signal=r.signal[:200],
                model_signals=list(self.signals),
                action="map it to a model signal (EDGE_INGEST__SIGNALS) or leave it out",
                held_back=held,
            )

    def _advance(self, asset: str, frame: _AssetFrame, ts: float) -> None:
        """Emit a row for every tick strictly before `ts`."""
        frame.held = None  # the clock moves on: a jump held before is not confirmed by it
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
        latest, updated, rows, window = frame.latest, frame.updated, frame.rows, self.window
        for tick in range(frame.next_tick, last_tick + 1):
            tick_ts = tick / rate
            # Rows wait as Python lists and go to the ring a hop at a time (`_emit`).
            if tick_ts - min(updated) <= stale_after:
                rows.append(latest.copy())
            else:
                rows.append(
                    [
                        v if tick_ts - u <= stale_after else math.nan
                        for v, u in zip(latest, updated, strict=True)
                    ]
                )
            frame.filled += 1
            frame.since_emit += 1
            if frame.filled >= window and frame.since_emit >= self.hop:
                frame.since_emit = 0
                self._emit(asset, tick_ts, frame)
            elif len(rows) >= window:
                self._write_rows(frame)
        frame.next_tick = last_tick + 1
        frame.tick_ts = frame.next_tick / rate
        frame.last_ts = last_tick / rate

    def _write_rows(self, frame: _AssetFrame) -> None:
        """Write the waiting rows to the ring (the last `window` of them)."""
        rows, window = frame.rows, self.window
        if not rows:
            return
        if len(rows) > window:
            frame.pos = (frame.pos + len(rows) - window) % window
            rows = rows[-window:]
        pos, end = frame.pos, frame.pos + len(rows)
        if end <= window:
            frame.ring[pos:end] = rows
        else:
            frame.ring[pos:] = rows[: window - pos]
            frame.ring[: end - window] = rows[window - pos :]
        frame.pos = end % window
        frame.rows.clear()  # the same list: `_advance` holds it

    def _emit(self, asset: str, ts: float, frame: _AssetFrame) -> None:
        self._write_rows(frame)
        values = np.concatenate((frame.ring[frame.pos :], frame.ring[: frame.pos]))
        if np.isnan(values).any():
            metrics.WINDOWS.labels("incomplete").inc()
            return
        if len(self._pending) >= self.settings.max_pending_windows:
            self._pending.popleft()
            metrics.WINDOWS.labels("dropped").inc()
        self._pending.append(Window(asset, ts, values))
