"""The history's byte accounting covers the memory its blocks really take (tracemalloc), so
EDGE_RETENTION__HISTORY_BYTES bounds the resident memory it stands for."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from edge_agent.daemon.retention.history import HistoryStore


def test_accounted_bytes_cover_the_traced_memory_of_small_and_large_blocks() -> None:
    for points in (1, 3, 6, 50):
        store = HistoryStore(86_400.0, lambda: 0.0)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(5_000):
                t = np.arange(points, dtype=np.float64) + i
                v = np.full(points, 50.0 + i % 7)
                store.append("pump-01", "temperature", t, v, 0.1)
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert store.nbytes >= traced, (points, store.nbytes, traced)
        assert store.nbytes < 1.5 * traced, (points, store.nbytes, traced)  # not padded either
