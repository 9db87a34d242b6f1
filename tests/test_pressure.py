"""Degraded mode: engaged by a really blocked event loop or a backlog, cleared with hysteresis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from edge_agent.core import metrics
from edge_agent.core.errors import ConfigError
from edge_agent.daemon.service.pressure import Pressure
from edge_agent.daemon.service.settings import ServiceSettings
from edge_agent.daemon.settings import load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):  # a hang guard, not a timing assertion
        while not condition():
            await asyncio.sleep(0.01)


def _changes(state: str, cause: str) -> float:
    return float(metrics.DEGRADED_CHANGES.labels(state=state, cause=cause)._value.get())


def test_lag_engages_and_calm_clears_after_the_hold() -> None:
    clock = Clock()
    service = ServiceSettings(lag_high_s=0.5, lag_low_s=0.1, clear_after_s=10.0)
    pressure = Pressure(service, clock=clock)
    seen: list[bool] = []
    pressure.subscribe(seen.append)
    engaged_before = _changes("engaged", "lag")

    assert not pressure.update(0.3, 0)  # between the bounds: nothing happens
    assert pressure.update(0.8, 0)
    assert metrics.DEGRADED._value.get() == 1
    assert _changes("engaged", "lag") == engaged_before + 1
    assert pressure.update(0.3, 0)  # not low enough to start the calm period

    assert pressure.update(0.05, 0)
    clock.now = 9.0
    assert pressure.update(0.05, 0)  # calm, but not for long enough
    clock.now = 9.5
    assert pressure.update(0.2, 0)  # a relapse restarts the calm period
    clock.now = 10.0
    assert pressure.update(0.05, 0)
    clock.now = 19.9
    assert pressure.update(0.05, 0)
    clock.now = 20.0
    assert not pressure.update(0.05, 0)
    assert metrics.DEGRADED._value.get() == 0
    assert seen == [True, False]


def test_backlog_engages_and_must_fall_below_the_low_bound() -> None:
    clock = Clock()
    service = ServiceSettings(backlog_high=100, backlog_low=10, clear_after_s=0.0)
    pressure = Pressure(service, clock=clock)
    before = _changes("engaged", "backlog")
    assert not pressure.update(0.0, 100)
    assert pressure.update(0.0, 101)
    assert _changes("engaged", "backlog") == before + 1
    assert pressure.update(0.0, 50)  # under high, above low: stays engaged
    assert not pressure.update(0.0, 9)


def test_both_causes_are_named() -> None:
    pressure = Pressure(ServiceSettings(backlog_high=100, backlog_low=10))
    before = _changes("engaged", "both")
    assert pressure.update(5.0, 1000)
    assert _changes("engaged", "both") == before + 1


def test_bounds_must_leave_room_for_hysteresis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_SERVICE__LAG_LOW_S", "0.5")
    monkeypatch.setenv("EDGE_SERVICE__LAG_HIGH_S", "0.5")
    with pytest.raises(ConfigError, match="EDGE_SERVICE__LAG_LOW_S"):
        load_settings()


async def test_a_blocked_loop_engages_the_mode_and_it_clears() -> None:
    service = ServiceSettings(
        lag_interval_s=0.02, lag_high_s=0.2, lag_low_s=0.05, clear_after_s=0.1
    )
    backlog = {"windows": 0}
    pressure = Pressure(service, backlog=lambda: backlog["windows"])
    seen: list[bool] = []
    pressure.subscribe(seen.append)
    probe = asyncio.create_task(pressure.run())
    try:
        await asyncio.sleep(0.1)
        assert not pressure.engaged  # an idle loop is on time
        loop = asyncio.get_running_loop()
        loop.call_soon(time.sleep, 0.5)  # really block the event loop
        await _until(lambda: pressure.engaged)
        assert pressure.lag_s > service.lag_high_s
        assert metrics.LOOP_LAG_LAST._value.get() > service.lag_high_s
        await _until(lambda: not pressure.engaged)
        assert seen == [True, False]
    finally:
        probe.cancel()
