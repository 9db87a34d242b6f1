"""Plausible time: no single message can move an asset's clock.

Checked where readings enter (mapping.py), per message, on its oldest and newest reading:
- against the gateway's clock: a reading more than `ts_max_ahead_s` ahead of it (or, when
  `ts_max_age_s` is set, that much behind it) is implausible. A timestamp that would be
  plausible in the other unit says so: milliseconds under EDGE_INGEST__TS_UNIT=s, seconds
  under ms.
- against the asset's own readings: a message whose newest reading is more than
  `ts_max_jump_s` ahead of the asset's newest is held back as implausible and remembered.
  A later message within `ts_max_jump_s` of it confirms the new time (a device back after
  an outage, a clock set right); one near the old time (the asset's next normal reading)
  forgets it. So a lone outlier is dead-lettered and the asset goes on; a real jump costs
  the one message that announced it.

The state is bounded: `MAX_ASSETS` clocks, the oldest forgotten first (that asset's next
message is taken as its first).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Final

from edge_agent.connectors.settings import IngestSettings
from edge_agent.core import metrics

MAX_ASSETS: Final = 65_536
_Y2K: Final = 946_684_800.0  # a timestamp before 2000 read in the other unit is no hint
_SECONDS_BEFORE: Final = 1e8  # 1973: under ms, a time this early is suspect


class Implausible(Exception):  # noqa: N818 - a verdict on a message, like mapping.Rejected
    """A message whose time cannot be right; the text says why and what to set."""


class Clocks:
    """The newest plausible time of each asset, and the jump each one may be waiting for."""

    def __init__(self, ingest: IngestSettings, now: Callable[[], float]) -> None:
        self._ahead = ingest.ts_max_ahead_s
        self._age = ingest.ts_max_age_s
        self._jump = ingest.ts_max_jump_s
        self._ms = ingest.ts_unit == "ms"
        self._now = now
        self._newest: dict[str, float] = {}
        self._held: dict[str, float] = {}
        self._tracked = metrics.ASSETS_TRACKED.labels("clocks")

    def check(self, asset: str, lo: float, hi: float) -> None:
        """Take a message of `asset` with readings in [lo, hi]; raise Implausible if not."""
        now = self._now()
        if not hi <= now + self._ahead:  # `not <=`: NaN fails too
            raise Implausible(self._off_wall(hi, now))
        if self._age and lo < now - self._age:
            raise Implausible(self._off_wall(lo, now))
        if self._ms and hi < _SECONDS_BEFORE and _Y2K <= hi * 1000 <= now + self._ahead:
            raise Implausible(
                f"ts {hi * 1000:.0f} read as milliseconds is {_date(hi)}; it looks like seconds: "
                "set EDGE_INGEST__TS_UNIT=s"
            )
        newest = self._newest.get(asset)
        if newest is None:
            self._remember(asset, hi)
            return
        if hi > newest + self._jump:
            held = self._held.get(asset)
            if held is None or abs(hi - held) > self._jump:
                if held is None and len(self._held) >= MAX_ASSETS:
                    del self._held[next(iter(self._held))]
                self._held[asset] = hi
                raise Implausible(
                    f"ts {hi} is {hi - newest:.0f} s after asset {asset[:200]!r}'s newest "
                    f"reading ({newest}): held until another message within "
                    f"EDGE_INGEST__TS_MAX_JUMP_S={self._jump:g} of it confirms the new time"
                )
        if self._held:
            self._held.pop(asset, None)
        if hi > newest:
            self._newest[asset] = hi

    def _remember(self, asset: str, ts: float) -> None:
        newest = self._newest
        if len(newest) >= MAX_ASSETS:
            del newest[next(iter(newest))]
        newest[asset] = ts
        self._tracked.set(len(newest))

    def _off_wall(self, ts: float, now: float) -> str:
        where = "ahead of" if not ts < now else "behind"  # NaN: "ahead of"
        text = f"ts {ts} is {where} the gateway's clock ({now:.0f}) by more than " + (
            f"EDGE_INGEST__TS_MAX_AHEAD_S={self._ahead:g}"
            if where == "ahead of"
            else f"EDGE_INGEST__TS_MAX_AGE_S={self._age:g}"
        )
        if not self._ms and _Y2K <= ts / 1000 <= now + self._ahead:
            text += f"; as milliseconds it is {_date(ts / 1000)}: set EDGE_INGEST__TS_UNIT=ms"
        return text


def _date(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ts:g} s after 1970"
