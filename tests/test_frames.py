"""Frames: the event-time grid, staleness, bad quality, late readings, bounds."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from edge_agent.core import logs, metrics
from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.flow.frames import FrameBuilder
from edge_agent.daemon.flow.gate import Gate
from edge_agent.daemon.flow.settings import FrameSettings, GateSettings

SIGNALS = ("a", "b")


def _builder(**kw: float) -> FrameBuilder:
    settings = FrameSettings(**kw)
    return FrameBuilder(SIGNALS, rate_hz=1.0, window=4, hop=2, settings=settings)


def _sample(asset: str, ts: float, a: float, b: float, q: Quality = Quality.GOOD) -> list[Reading]:
    return [Reading(asset, "a", ts, a, q), Reading(asset, "b", ts, b, Quality.GOOD)]


def _dropped(reason: str) -> float:
    return float(metrics.READINGS_DROPPED.labels(reason)._value.get())


def test_windows_hold_last_value_on_the_grid() -> None:
    f = _builder()
    for t in range(10):
        f.ingest(_sample("p1", 100.0 + t, float(t), 10.0 * t))
    windows = f.take()
    # rows for ticks 100..108 are out (tick 109 waits for a later reading); first window
    # after 4 rows, then every 2 rows.
    assert [w.ts for w in windows] == [103.0, 105.0, 107.0]
    np.testing.assert_array_equal(windows[0].values[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(windows[-1].values[:, 1], [40, 50, 60, 70])
    assert windows[0].values.dtype == np.float32
    assert f.take() == []


def test_sub_grid_readings_are_sampled_and_held() -> None:
    f = _builder()
    # 4 Hz readings of "a", a single "b" held throughout.
    f.ingest([Reading("p1", "b", 99.9, 5.0)])
    for i in range(40):
        f.ingest([Reading("p1", "a", 100.0 + i / 4, float(i))])
    w = f.take()[0]
    # The row at tick t holds the last value with ts <= t: a = 4 * (t - 100).
    np.testing.assert_array_equal(w.values[:, 0], [0, 4, 8, 12])
    np.testing.assert_array_equal(w.values[:, 1], [5, 5, 5, 5])


def test_bad_quality_never_enters_a_window_as_good() -> None:
    f = _builder()
    for t in range(6):
        f.ingest(_sample("p1", 100.0 + t, 1.0, 2.0))
    assert len(f.take()) == 1
    before = metrics.WINDOWS.labels("incomplete")._value.get()
    f.ingest(_sample("p1", 106.0, 999.0, 2.0, Quality.BAD))
    f.ingest(_sample("p1", 107.0, 998.0, 2.0, Quality.UNCERTAIN))
    for t in range(108, 116):
        f.ingest(_sample("p1", float(t), 1.0, 2.0))
    windows = f.take()
    for w in windows:
        assert not np.isin([999.0, 998.0], w.values).any()
        assert np.isfinite(w.values).all()
    assert metrics.WINDOWS.labels("incomplete")._value.get() > before
    # Once four good rows have passed, windows flow again.
    assert windows
    assert [w.ts for w in windows] == [105.0, 111.0, 113.0]  # 107, 109 hold bad rows


def test_stale_signal_makes_windows_incomplete() -> None:
    f = _builder(stale_after_s=2.0)
    f.ingest(_sample("p1", 100.0, 1.0, 1.0))
    for t in range(101, 110):
        f.ingest([Reading("p1", "a", float(t), 1.0)])  # b stops reporting
    windows = f.take()
    # b is held for 2 s (ticks 100..102), then NaN: only windows ending <= 102 could be
    # complete, and none is (the first needs 4 rows).
    assert windows == []


def test_unknown_signal_late_and_too_many_assets_are_counted() -> None:
    f = _builder(max_assets=1)
    unknown, late, assets = (
        _dropped("unknown_signal"),
        _dropped("late"),
        _dropped("too_many_assets"),
    )
    f.ingest([Reading("p1", "zzz", 100.0, 1.0)])
    f.ingest(_sample("p1", 100.0, 1.0, 1.0))
    f.ingest(_sample("p1", 105.0, 1.0, 1.0))
    f.ingest([Reading("p1", "a", 101.0, 1.0)])
    f.ingest(_sample("p2", 100.0, 1.0, 1.0))
    assert _dropped("unknown_signal") == unknown + 1
    assert _dropped("late") == late + 1
    assert _dropped("too_many_assets") == assets + 2


def test_gap_restarts_the_frame() -> None:
    f = _builder(max_gap_s=10.0)
    for t in range(6):
        f.ingest(_sample("p1", 100.0 + t, 1.0, 1.0))
    f.take()
    for t in range(6):
        f.ingest(_sample("p1", 1000.0 + t, 2.0, 2.0))
    windows = f.take()
    assert windows
    assert all((w.values == 2.0).all() for w in windows)


def test_pending_windows_are_bounded_drop_oldest() -> None:
    f = _builder(max_pending_windows=16)
    dropped = metrics.WINDOWS.labels("dropped")._value.get()
    for t in range(200):
        f.ingest(_sample("p1", 100.0 + t, float(t), 0.0))
    windows = f.take()
    assert len(windows) == 16
    assert windows[-1].ts == 297.0
    assert metrics.WINDOWS.labels("dropped")._value.get() > dropped


@pytest.mark.parametrize("mode", ["all", "adaptive"])
def test_gate_passes_everything_without_load(mode: str) -> None:
    f = _builder()
    for t in range(40):
        f.ingest(_sample("p1", 100.0 + t, 1.0 + 0.01 * (t % 3), 1.0))
    windows = f.take()
    gate = Gate(GateSettings(mode=mode), 2)
    assert gate.select(windows, backlog=len(windows)) == windows


def test_gate_under_pressure_skips_normal_keeps_outliers_and_samples() -> None:
    f = _builder()
    rng = np.random.default_rng(1)
    for t in range(400):
        f.ingest(_sample("p1", 100.0 + t, 1.0 + 0.01 * rng.standard_normal(), 1.0))
    normal = f.take()
    gate = Gate(GateSettings(sample_every=5), 2)
    gate.learn(normal, [True] * len(normal))
    gate.pressure = True
    chosen = gate.select(normal, backlog=0)
    assert 0 < len(chosen) <= len(normal) // 5 + 1
    outlier = normal[0]._replace(values=normal[0].values + np.float32(5.0))
    assert gate.select([outlier], backlog=0) == [outlier]
    base = gate.baselines([normal[0]])
    assert base.shape == (1, 2)
    assert abs(base[0, 0] - 1.0) < 0.01


def test_a_batch_grouped_by_signal_is_put_in_time_order() -> None:
    """An OPC UA publish response lists each node's samples together, not in time order."""
    f = _builder()
    batch = [Reading("p1", "a", 100.0 + t, float(t)) for t in range(8)]
    batch += [Reading("p1", "b", 100.0 + t, 10.0 * t) for t in range(8)]
    late = _dropped("late")
    f.ingest(batch)
    windows = f.take()
    assert _dropped("late") == late
    np.testing.assert_array_equal(windows[0].values[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(windows[0].values[:, 1], [0, 10, 20, 30])


def test_one_reading_far_ahead_cannot_move_an_assets_clock() -> None:
    f = _builder(max_gap_s=60)
    before = _dropped("implausible_ts")
    for t in range(6):
        f.ingest(_sample("p1", 100.0 + t, 1.0, 2.0))
    f.ingest([Reading("p1", "a", 1e30, 5.0)])  # a lone outlier
    for t in range(6, 12):
        f.ingest(_sample("p1", 100.0 + t, 1.0, 2.0))
    assert _dropped("implausible_ts") - before == 1
    assert [w.ts for w in f.take()] == [103.0, 105.0, 107.0, 109.0]  # scored on, no gap


def test_a_jump_confirmed_by_a_second_reading_restarts_the_frame() -> None:
    f = _builder(max_gap_s=60)
    for t in range(6):
        f.ingest(_sample("p1", 100.0 + t, 1.0, 2.0))
    f.take()
    for t in range(6):  # back after an hour: the first reading is held, the rest confirm it
        f.ingest(_sample("p1", 3700.0 + t, 1.0, 2.0))
    assert [w.ts for w in f.take()] == [3704.0]  # a row of the held reading is missing


def test_idle_assets_are_forgotten_and_free_their_slot() -> None:
    f = _builder(max_assets=2, asset_idle_s=0.2)
    before = _dropped("too_many_assets")
    evicted = metrics.ASSETS_EVICTED.labels("frames", "idle")._value.get()
    f.ingest(_sample("typo-1", 100.0, 1.0, 2.0))
    f.ingest(_sample("typo-2", 100.0, 1.0, 2.0))
    f.ingest(_sample("real", 100.0, 1.0, 2.0))
    assert _dropped("too_many_assets") - before == 2
    time.sleep(0.3)
    for t in range(6):
        f.ingest(_sample("real", 100.0 + t, 1.0, 2.0))
    assert {w.asset for w in f.take()} == {"real"}
    assert metrics.ASSETS_EVICTED.labels("frames", "idle")._value.get() - evicted == 2


def test_unknown_signal_is_logged_once_per_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("info", "json", stream=sys.stdout)
    f = _builder()
    for t in range(5):
        f.ingest([Reading("p1", "rpm", 100.0 + t, 1.0)])
    lines = [line for line in capsys.readouterr().out.splitlines() if "unknown_signal" in line]
    assert len(lines) == 1, lines
    assert '"signal": "rpm"' in lines[0]
