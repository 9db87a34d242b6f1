"""Deadband + swinging door: the error bound and the max interval hold for any stream (1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.daemon.retention import compression
from edge_agent.daemon.retention.compression import (
    Compressor,
    Deadband,
    SwingingDoor,
    reconstruct,
)

F64 = np.ndarray


def _run(comp: Compressor | SwingingDoor, ts: F64, vs: F64, cuts: list[int]) -> tuple[F64, F64]:
    kept_t, kept_v = [], []
    bounds = [0, *sorted(c % (ts.size + 1) for c in cuts), ts.size]
    for a, b in itertools.pairwise(bounds):
        t, v = comp.feed(ts[a:b], vs[a:b])
        kept_t.append(t)
        kept_v.append(v)
    t, v = comp.flush()
    return np.concatenate([*kept_t, t]), np.concatenate([*kept_v, v])


def _check(ts: F64, vs: F64, kt: F64, kv: F64, deviation: float, max_interval: float) -> None:
    assert np.all(np.diff(kt) > 0)
    assert kt[0] == ts[0]
    assert kt[-1] == ts[-1]
    # Retained points are real samples, unchanged.
    idx = np.searchsorted(ts, kt)
    assert np.array_equal(ts[idx], kt)
    assert np.array_equal(vs[idx], kv)
    err = np.abs(reconstruct(kt, kv, ts) - vs)
    tol = 1e-9 * max(1.0, float(np.abs(vs).max()))
    assert err.max() <= deviation + tol
    # Longer gaps only where two raw samples are already that far apart.
    long_gap = np.diff(kt) > max_interval
    assert not np.any(long_gap & (np.diff(idx) != 1))


streams = st.integers(1, 400).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(1e-3, 50.0), min_size=n, max_size=n),
        st.lists(st.floats(-1e4, 1e4), min_size=n, max_size=n),
    )
)


@settings(max_examples=400, deadline=None)
@given(
    stream=streams,
    walk=st.booleans(),
    deviation=st.floats(0.0, 100.0),
    max_interval=st.floats(0.01, 500.0),
    share=st.floats(0.0, 0.95),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_error_bound_and_max_interval(
    stream: tuple[list[float], list[float]],
    walk: bool,
    deviation: float,
    max_interval: float,
    share: float,
    cuts: list[int],
) -> None:
    gaps, steps = stream
    ts = 1.7e9 + np.cumsum(gaps)
    # A random walk looks like a process; raw draws are the adversarial case.
    vs = np.cumsum(steps) / 100 if walk else np.asarray(steps)
    kt, kv = _run(Compressor(deviation, max_interval, share), ts, vs, cuts)
    _check(ts, vs, kt, kv, deviation, max_interval)


@settings(max_examples=200, deadline=None)
@given(
    stream=streams,
    deviation=st.floats(0.0, 50.0),
    max_interval=st.floats(0.01, 500.0),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_door_alone_keeps_its_bound(
    stream: tuple[list[float], list[float]],
    deviation: float,
    max_interval: float,
    cuts: list[int],
) -> None:
    gaps, steps = stream
    ts = np.cumsum(gaps)
    vs = np.cumsum(steps) / 100
    kt, kv = _run(SwingingDoor(deviation, max_interval), ts, vs, cuts)
    _check(ts, vs, kt, kv, deviation, max_interval)


@settings(max_examples=200, deadline=None)
@given(
    stream=streams,
    walk=st.booleans(),
    deviation=st.floats(0.0, 100.0),
    max_interval=st.floats(0.01, 500.0),
    share=st.floats(0.0, 0.95),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_plain_python_and_numpy_paths_agree_exactly(
    stream: tuple[list[float], list[float]],
    walk: bool,
    deviation: float,
    max_interval: float,
    share: float,
    cuts: list[int],
) -> None:
    gaps, steps = stream
    ts = 1.7e9 + np.cumsum(gaps)
    vs = np.cumsum(steps) / 100 if walk else np.asarray(steps)
    runs = []
    default = compression.SMALL_CHUNK
    try:
        for small in (0, 1 << 30):  # numpy only, then plain Python only
            compression.SMALL_CHUNK = small
            comp = _run(Compressor(deviation, max_interval, share), ts, vs, cuts)
            plain = Deadband(deviation, max_interval, keep_previous=False).feed(ts, vs)
            runs.append((*comp, *plain))
    finally:
        compression.SMALL_CHUNK = default
    for numpy_out, python_out in zip(*runs, strict=True):
        assert np.array_equal(numpy_out, python_out)


def test_door_does_not_keep_the_sample_that_breaks_the_band() -> None:
    # Classic SDT would archive (2, -0.8) and draw 0 -> -0.8, passing 1.4 away from (1, 1).
    door = SwingingDoor(1.0, 100.0)
    ts = np.array([0.0, 1.0, 2.0, 3.0])
    vs = np.array([0.0, 1.0, -0.8, 5.0])
    kt, kv = _run(door, ts, vs, [])
    assert np.abs(reconstruct(kt, kv, ts) - vs).max() <= 1.0
    assert 1.0 in kt


def test_steady_signal_compresses_to_the_max_interval() -> None:
    rng = np.random.default_rng(7)
    ts = np.arange(36_000) / 10.0  # an hour at 10 Hz
    vs = 20 + rng.uniform(-0.04, 0.04, ts.size)
    kt, _ = _run(Compressor(1.0, 60.0, 0.2), ts, vs, [5000, 20000])
    # Noise inside the deadband: one point per max interval, plus the ends.
    assert kt.size <= ts[-1] / 60.0 + 2
    assert np.diff(kt).max() <= 60.0


def test_plain_deadband_holds_within_its_deviation_as_a_step() -> None:
    rng = np.random.default_rng(3)
    ts = np.arange(5000, dtype=np.float64)
    vs = np.cumsum(rng.normal(0, 0.3, ts.size))
    band = Deadband(0.5, 1e9, keep_previous=False)
    kt, kv = band.feed(ts, vs)
    assert np.abs(reconstruct(kt, kv, ts, step=True) - vs).max() <= 0.5
    assert kt.size < ts.size


def test_deviation_may_only_grow() -> None:
    comp = Compressor(1.0, 10.0)
    comp.deviation = 2.0
    assert comp.deviation == 2.0
    with pytest.raises(ValueError, match="only grow"):
        comp.deviation = 1.0


def test_widening_mid_stream_keeps_the_final_bound() -> None:
    rng = np.random.default_rng(11)
    ts = np.arange(4000, dtype=np.float64)
    vs = np.cumsum(rng.normal(0, 0.2, ts.size))
    comp = Compressor(0.2, 50.0)
    kt1, kv1 = comp.feed(ts[:2000], vs[:2000])
    comp.deviation = 1.0
    kt2, kv2 = comp.feed(ts[2000:], vs[2000:])
    kt3, kv3 = comp.flush()
    kt, kv = np.concatenate([kt1, kt2, kt3]), np.concatenate([kv1, kv2, kv3])
    _check(ts, vs, kt, kv, 1.0, 50.0)
