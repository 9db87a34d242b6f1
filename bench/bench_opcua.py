"""OPC UA ingest: 1,000 monitored items at 10 Hz from the in-process plant server.

Prints readings/s received, the lag from source timestamp to the reading being handed to
the pipeline (median, p99), and whether a backlog grew (buffer depth and lag, first third
against last third of the run). Server and client share one event loop and one process,
so the figures are a floor for a gateway talking to a real PLC.

    python -m bench.bench_opcua --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

from edge_agent.connectors.opcua import OpcUaSource
from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core import metrics
from edge_agent.simulator.opcua_server import PlantServer

ASSETS = 200  # x 5 signals = 1,000 monitored items
RATE_HZ = 10.0
WARMUP_S = 3.0


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(seconds: float) -> None:
    async with PlantServer(
        0,
        [f"pump-{i:03d}" for i in range(ASSETS)],
        speed=RATE_HZ,
        source_time="wall",  # lag is measured against the wall clock
    ) as server:
        settings = OpcUaSettings.model_validate(
            {
                "endpoint": server.endpoint,
                "nodes": server.node_map(),
                "security_policy": "None",
                "allow_insecure": True,
                "publishing_interval_ms": 100,
                "sampling_interval_ms": 0,
                "queue_size": 10,
                "max_batch": 2000,
            }
        )
        lags: list[tuple[float, float]] = []  # (run time, lag) per reading
        depth: list[tuple[float, int]] = []
        count = 0
        async with OpcUaSource(settings) as source:

            async def consume() -> None:
                nonlocal count
                async for batch in source.batches():
                    now = time.time()
                    t = time.monotonic() - start
                    if t >= WARMUP_S:
                        count += len(batch)
                        lags.extend((t, now - r.ts) for r in batch)

            start = time.monotonic()
            task = asyncio.create_task(consume())
            await asyncio.sleep(WARMUP_S)
            steps_at_warmup = server.steps
            while (elapsed := time.monotonic() - start) < seconds + WARMUP_S:
                await asyncio.sleep(1.0)
                depth.append((elapsed, int(metrics.OPCUA_BUFFERED._value.get())))
            written = (server.steps - steps_at_warmup) * ASSETS * 5
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    measured = [lag for t, lag in lags]
    if not measured:
        print("no readings received")
        return
    third = seconds / 3
    early = [lag for t, lag in lags if t < WARMUP_S + third]
    late = [lag for t, lag in lags if t >= WARMUP_S + 2 * third]
    early_depth = max((d for t, d in depth if t < WARMUP_S + third), default=0)
    late_depth = max((d for t, d in depth if t >= WARMUP_S + 2 * third), default=0)
    grew = (
        bool(early and late) and statistics.median(late) > statistics.median(early) + 0.5
    ) or late_depth > 2 * max(early_depth, settings.max_batch)
    dropped = metrics.READINGS_DROPPED.labels("opcua_buffer_full")._value.get()
    print(f"items: {ASSETS * 5} at {RATE_HZ:g} Hz, {seconds:g} s measured after {WARMUP_S:g} s")
    print(
        f"readings/s received: {count / seconds:,.0f} (asked {ASSETS * 5 * RATE_HZ:,.0f}, "
        f"the server managed to write {written / seconds:,.0f})"
    )
    print(
        f"lag source ts -> pipeline: median {statistics.median(measured) * 1000:.0f} ms, "
        f"p99 {_p(measured, 0.99) * 1000:.0f} ms"
    )
    print(
        f"backlog grew: {'YES' if grew else 'no'} (buffer max first third {early_depth}, "
        f"last third {late_depth}; median lag first third "
        f"{statistics.median(early) * 1000 if early else float('nan'):.0f} ms, last third "
        f"{statistics.median(late) * 1000 if late else float('nan'):.0f} ms; "
        f"buffer drops {dropped:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured duration")
    args, _ = parser.parse_known_args()  # `python -m bench opcua` passes bench names too
    asyncio.run(_run(args.seconds))


if __name__ == "__main__":
    main()
