"""Degraded mode: engaged when the event loop runs late or the scorer falls behind.

A probe task sleeps a fixed period and measures how late it wakes (the event-loop lag); the
backlog comes from a callback (windows waiting for the scorer). The mode engages when either
passes its high bound and clears only after both stayed under their low bounds for
`clear_after_s`, so it does not flap. What degraded mode changes (the gate's bar, history
digests) belongs to the stages that read `Pressure.engaged`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from edge_agent.core import metrics
from edge_agent.daemon.service.settings import ServiceSettings

log = structlog.get_logger(__name__)

Listener = Callable[[bool], None]


def _no_backlog() -> int:
    return 0


class Pressure:
    """Whether the agent is under pressure; `engaged` is what the stages read."""

    def __init__(
        self,
        service: ServiceSettings,
        backlog: Callable[[], int] = _no_backlog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._s = service
        self._backlog = backlog
        self._clock = clock
        self._engaged = False
        self._low_since: float | None = None
        self._listeners: list[Listener] = []
        self.lag_s = 0.0
        metrics.DEGRADED.set(0)

    @property
    def engaged(self) -> bool:
        """True while degraded mode is on."""
        return self._engaged

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(engaged)` on every change (from the event loop)."""
        self._listeners.append(listener)

    def update(self, lag_s: float, backlog: int) -> bool:
        """Take one observation and return whether the mode is engaged after it."""
        self.lag_s = lag_s
        lag_high = lag_s > self._s.lag_high_s
        backlog_high = backlog > self._s.backlog_high
        if not self._engaged:
            if lag_high or backlog_high:
                cause = "both" if lag_high and backlog_high else "lag" if lag_high else "backlog"
                self._change(engaged=True, cause=cause, lag_s=lag_s, backlog=backlog)
            return self._engaged
        if lag_s < self._s.lag_low_s and backlog < self._s.backlog_low:
            now = self._clock()
            if self._low_since is None:
                self._low_since = now
            if now - self._low_since >= self._s.clear_after_s:
                self._change(engaged=False, cause="calm", lag_s=lag_s, backlog=backlog)
        else:
            self._low_since = None
        return self._engaged

    def _change(self, *, engaged: bool, cause: str, lag_s: float, backlog: int) -> None:
        self._engaged = engaged
        self._low_since = None
        state = "engaged" if engaged else "cleared"
        metrics.DEGRADED.set(1 if engaged else 0)
        metrics.DEGRADED_CHANGES.labels(state=state, cause=cause).inc()
        # Changes are rare by construction (hysteresis), so every one is logged.
        log.warning(
            "degraded mode", state=state, cause=cause, lag_s=round(lag_s, 4), backlog=backlog
        )
        for listener in self._listeners:
            listener(engaged)

    async def run(self) -> None:
        """Probe the event-loop lag every `lag_interval_s` until cancelled."""
        loop = asyncio.get_running_loop()
        period = self._s.lag_interval_s
        while True:
            start = loop.time()
            await asyncio.sleep(period)
            lag = max(0.0, loop.time() - start - period)
            metrics.LOOP_LAG.observe(lag)
            metrics.LOOP_LAG_LAST.set(lag)
            self.update(lag, self._backlog())
