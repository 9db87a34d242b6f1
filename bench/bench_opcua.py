"""OPC UA ingest: 1,000 monitored items at 10 Hz from the plant server in its own process.

Prints readings/s received, the lag from source timestamp (the server stamps wall time) to
the reading being handed to the pipeline (median, p99), and whether a backlog grew (buffer
depth and lag, first third against last third of the run). The server runs in a process of
its own, as a PLC would be another machine: the lag is the client's, not time spent waiting
for the server's share of one event loop.

    python -m bench.bench_opcua --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.connectors.opcua import OpcUaSource
from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core import metrics
from edge_agent.simulator.opcua_server import PlantServer

ASSETS = 200  # x 5 signals = 1,000 monitored items
RATE_HZ = 10.0
WARMUP_S = 3.0
GOAL_P99_MS = 500.0
ROOT = Path(__file__).resolve().parent.parent


def serve() -> None:
    """The plant server alone (its own process): print its endpoint, then its step counts."""

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with PlantServer(
            0, [f"pump-{i:03d}" for i in range(ASSETS)], speed=RATE_HZ, source_time="wall"
        ) as server:
            hello = {"endpoint": server.endpoint, "nodes": server.node_map()}
            print("SERVER " + json.dumps(hello), flush=True)
            while not stop.is_set():
                print(f"STEPS {server.steps} {time.monotonic()}", flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)

    asyncio.run(run())


class _Server:
    """The server process, and the step counts it reports (read on a thread)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_opcua", "serve"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.hello: dict[str, object] = {}
        for line in self.proc.stdout:
            if line.startswith("SERVER "):
                self.hello = json.loads(line[7:])
                break
        if not self.hello:
            msg = "the OPC UA server process did not start"
            raise RuntimeError(msg)
        self.steps: list[tuple[float, int]] = []  # (monotonic, steps)

    async def follow(self) -> None:
        """Collect step counts until the server's output ends."""
        assert self.proc.stdout is not None
        while line := await asyncio.to_thread(self.proc.stdout.readline):
            if line.startswith("STEPS "):
                _, n, t = line.split()
                self.steps.append((float(t), int(n)))

    def steps_since(self, t: float) -> int:
        """Steps the server made from monotonic time `t` to its last report."""
        before = [n for at, n in self.steps if at <= t]
        return self.steps[-1][1] - (before[-1] if before else 0) if self.steps else 0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(seconds: float) -> None:
    server = _Server()
    try:
        settings = OpcUaSettings.model_validate(
            {
                "endpoint": server.hello["endpoint"],
                "nodes": server.hello["nodes"],
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
        follow = asyncio.create_task(server.follow())
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
            warm = time.monotonic()
            while (elapsed := time.monotonic() - start) < seconds + WARMUP_S:
                await asyncio.sleep(1.0)
                depth.append((elapsed, int(metrics.OPCUA_BUFFERED._value.get())))
            written = server.steps_since(warm) * ASSETS * 5
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        server.stop()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await follow

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
    p99 = _p(measured, 0.99) * 1000
    print(
        f"lag source ts -> pipeline (server in its own process): median "
        f"{statistics.median(measured) * 1000:.0f} ms, p99 {p99:.0f} ms (goal p99 <= "
        f"{GOAL_P99_MS:g} ms: {'met' if p99 <= GOAL_P99_MS else 'NOT met'})"
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
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        main()
