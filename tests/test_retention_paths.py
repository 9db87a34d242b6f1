"""Retention's compressor decides the same points however its samples arrive (issue 14).

The short-chunk paths carry state between calls (the deadband's reference, the door left open
over its pending samples, resumed by the next call); these tests hold them to the output of
one call over the whole stream, which takes the numpy paths, including a deviation that
widens between calls.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.daemon.retention import compression
from edge_agent.daemon.retention.compression import Compressor, Deadband, SwingingDoor

F64 = np.ndarray

streams = st.integers(1, 600).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(1e-3, 20.0), min_size=n, max_size=n),
        st.lists(st.floats(-50.0, 50.0), min_size=n, max_size=n),
    )
)


def _stream(gaps: list[float], steps: list[float], walk: bool) -> tuple[F64, F64]:
    ts = 1.7e9 + np.cumsum(gaps)
    return ts, (np.cumsum(steps) / 10 if walk else np.asarray(steps))


def _feed(
    comp: Compressor | SwingingDoor | Deadband,
    ts: F64,
    vs: F64,
    cuts: list[int],
    widen: float,
) -> tuple[F64, F64]:
    out = []
    bounds = [0, *sorted(c % (ts.size + 1) for c in cuts), ts.size]
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        if widen and k and isinstance(comp, Compressor):
            comp.deviation *= 1 + widen
        out.append(comp.feed(ts[a:b], vs[a:b]))
    if not isinstance(comp, Deadband):
        out.append(comp.flush())
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


@settings(max_examples=300, deadline=None)
@given(
    stream=streams,
    walk=st.booleans(),
    deviation=st.floats(0.0, 20.0),
    max_interval=st.floats(0.5, 200.0),
    share=st.floats(0.0, 0.9),
    keep_previous=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), min_size=1, max_size=12),
)
def test_chunked_short_paths_match_whole_stream_numpy_paths(
    stream: tuple[list[float], list[float]],
    walk: bool,
    deviation: float,
    max_interval: float,
    share: float,
    keep_previous: bool,
    cuts: list[int],
) -> None:
    ts, vs = _stream(*stream, walk)
    default = compression.SMALL_CHUNK
    try:
        compression.SMALL_CHUNK = 1 << 30  # every chunk on the short paths
        chunked = [
            _feed(Compressor(deviation, max_interval, share), ts, vs, cuts, 0.0),
            _feed(SwingingDoor(deviation, max_interval), ts, vs, cuts, 0.0),
            _feed(Deadband(deviation, max_interval, keep_previous), ts, vs, cuts, 0.0),
        ]
        compression.SMALL_CHUNK = 0  # one call, numpy paths only
        whole = [
            _feed(Compressor(deviation, max_interval, share), ts, vs, [], 0.0),
            _feed(SwingingDoor(deviation, max_interval), ts, vs, [], 0.0),
            _feed(Deadband(deviation, max_interval, keep_previous), ts, vs, [], 0.0),
        ]
    finally:
        compression.SMALL_CHUNK = default
    for (ct, cv), (wt, wv) in zip(chunked, whole, strict=True):
        assert np.array_equal(ct, wt)
        assert np.array_equal(cv, wv)


@settings(max_examples=150, deadline=None)
@given(
    stream=streams,
    deviation=st.floats(0.01, 20.0),
    widen=st.floats(0.01, 1.0),
    cuts=st.lists(st.integers(0, 10_000), min_size=1, max_size=12),
)
def test_a_door_left_open_is_not_resumed_after_the_deviation_widens(
    stream: tuple[list[float], list[float]], deviation: float, widen: float, cuts: list[int]
) -> None:
    ts, vs = _stream(*stream, walk=True)
    default = compression.SMALL_CHUNK
    runs = []
    try:
        for small in (0, 1 << 30):  # numpy paths (no state kept), then short paths (resumed)
            compression.SMALL_CHUNK = small
            runs.append(_feed(Compressor(deviation, 100.0, 0.1), ts, vs, cuts, widen))
    finally:
        compression.SMALL_CHUNK = default
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1], runs[1][1])
