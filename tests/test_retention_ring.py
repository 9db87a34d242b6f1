"""Signal rings grow as their signal needs, up to their capacity (issue 14, RSS).

Every case compares the ring with a plain list of every sample written: whatever the chunk
sizes, the last `horizon_s` is always there in full, and samples are lost only at capacity.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.daemon.retention.ring import BYTES_PER_SAMPLE, INITIAL_SAMPLES, SignalRing

HORIZON_S = 300.0
CAPACITY = 3001  # 300 s at 10 Hz, both ends


def _feed(ring: SignalRing, ts: np.ndarray, seed: int) -> int:
    """Write `ts` (values = ts, quality = ts % 3) in random chunks; return the young lost."""
    rng = np.random.default_rng(seed)
    lost, i = 0, 0
    while i < ts.size:
        n = int(rng.choice([1, 7, 128, 700, 4000]))
        part = ts[i : i + n]
        lost += ring.write(part, part * 2.0, (part % 3).astype(np.uint8))
        i += n
    return lost


@pytest.mark.parametrize("seed", range(4))
def test_a_slow_signal_keeps_a_small_ring_and_its_whole_horizon(seed: int) -> None:
    ring = SignalRing(CAPACITY, HORIZON_S)
    ts = 1_750_000_000.0 + np.arange(5000, dtype=np.float64)  # 1 Hz
    assert _feed(ring, ts, seed) == 0
    assert ring.nbytes <= 2 * 512 * BYTES_PER_SAMPLE  # not the 3,001 samples of 10 Hz
    newest = float(ts[-1])
    got = ring.window(newest - HORIZON_S, newest)
    want = ts[ts >= newest - HORIZON_S]
    np.testing.assert_array_equal(got.ts, want)
    np.testing.assert_array_equal(got.values, want * 2.0)
    np.testing.assert_array_equal(got.quality, (want % 3).astype(np.uint8))
    assert ring.newest == newest


@pytest.mark.parametrize("seed", range(4))
def test_a_signal_at_the_planned_rate_grows_to_capacity_and_loses_nothing(seed: int) -> None:
    ring = SignalRing(CAPACITY, HORIZON_S)
    assert ring.nbytes == INITIAL_SAMPLES * BYTES_PER_SAMPLE
    ts = 1_750_000_000.0 + np.arange(9000, dtype=np.float64) / 10.0  # 10 Hz
    assert _feed(ring, ts, seed) == 0
    assert ring.nbytes == CAPACITY * BYTES_PER_SAMPLE
    newest = float(ts[-1])
    np.testing.assert_array_equal(
        ring.window(newest - HORIZON_S, newest).ts, ts[ts >= newest - HORIZON_S]
    )
    # Inside the window, any span comes back exactly.
    lo, hi = newest - 200.0, newest - 50.0
    np.testing.assert_array_equal(ring.window(lo, hi).ts, ts[(ts >= lo) & (ts <= hi)])


def test_faster_than_planned_loses_young_samples_only_at_capacity() -> None:
    ring = SignalRing(CAPACITY, HORIZON_S)
    ts = 1_750_000_000.0 + np.arange(20_000, dtype=np.float64) / 20.0  # 20 Hz
    lost = 0
    for i in range(0, ts.size, 100):
        lost += ring.write(ts[i : i + 100], ts[i : i + 100], np.zeros(100, np.uint8))
    assert ring.nbytes == CAPACITY * BYTES_PER_SAMPLE
    assert lost > 0  # counted, as before the rings grew
    newest = float(ts[-1])
    got = ring.window(newest - HORIZON_S, newest).ts
    np.testing.assert_array_equal(got, ts[-CAPACITY:])  # the newest `capacity`, in order


def test_a_small_capacity_is_allocated_as_is() -> None:
    ring = SignalRing(121, 120.0)
    assert ring.nbytes == 121 * BYTES_PER_SAMPLE
