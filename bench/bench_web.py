"""The page's cost to the agent: per scored window, per recommendation, and its memory.

What the pipeline pays with no browser connected (`LiveState.scored` per window, `published`
per recommendation), the memory of the page's state at its bounds (every asset's ring full),
and one `/api/state` snapshot of 12 assets (paid only while a browser polls).
"""

from __future__ import annotations

import time
import tracemalloc

import msgspec

from edge_agent.core.readings import Outgoing, SignalStats, WindowResult
from edge_agent.daemon.web.observer import MAX_ASSETS, POINTS, LiveState
from edge_agent.rules.recommendation import SCHEMA_ID

SIGNALS = ("temperature", "vibration", "current", "pressure", "flow")
T0 = 1_750_000_000.0


def _batch(assets: int, ts: float) -> list[WindowResult]:
    stats = {s: SignalStats(1.0, 1.0, 0.9, 1.1, 0.0, 1.0, 0.0) for s in SIGNALS}
    contrib = dict.fromkeys(SIGNALS, 0.1)
    return [WindowResult(f"pump-{a}", ts, 0.5, 1.0, contrib, {}, stats) for a in range(assets)]


def _serving(_asset: str) -> dict[str, object]:
    return {"model": {"name": "m", "version": "1"}, "rules": {"name": "p", "version": "1"}}


def main() -> None:
    """Print the figures."""
    live = LiveState()
    batches = [_batch(12, T0 + 5 * i) for i in range(2000)]
    started = time.perf_counter()
    for batch in batches:
        live.scored(batch)
    per_window = (time.perf_counter() - started) / (12 * len(batches)) * 1e6
    rec = msgspec.json.encode(
        {"schema": SCHEMA_ID, "id": "r", "kind": "needs_review", "asset": "pump-1", "title": "t"}
    )
    msgs = [Outgoing("x/needs_review/pump-1", rec, "r")]
    started = time.perf_counter()
    for _ in range(2000):
        live.published(msgs)
    per_rec = (time.perf_counter() - started) / 2000 * 1e6
    started = time.perf_counter()
    body = msgspec.json.encode(live.snapshot(_serving))
    snapshot_ms = (time.perf_counter() - started) * 1e3

    tracemalloc.start()
    full = LiveState()
    for i in range(POINTS):
        full.scored(_batch(MAX_ASSETS, T0 + 5 * i))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"scored (no browser)            {per_window:6.2f} µs per window (12 assets a batch)")
    print(f"published (a recommendation)   {per_rec:6.2f} µs")
    print(f"api/state, 12 assets x {POINTS} pts {snapshot_ms:6.1f} ms, {len(body) // 1024} KB")
    print(f"state at its bounds ({MAX_ASSETS} assets x {POINTS} windows) {held / 2**20:.1f} MB")
    del full
