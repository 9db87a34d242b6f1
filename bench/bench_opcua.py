"""OPC UA ingest: 1,000 monitored items at 10 Hz from a server in its own process.

Prints readings/s received, what the server wrote and the CPU it used, the client's CPU per
reading, the lag from source timestamp (stamped by the server at each tick) to the reading
being handed to the pipeline (median, p99), and whether a backlog grew (buffer depth and
lag, first third against last third of the run). The server runs in a process of its own,
as a PLC would be another machine, and is made cheap enough to write the asked rate with
room to spare (see `serve`): the lag is the client's, not the server's falling behind.

    python -m bench.bench_opcua --seconds 60 [--server-cpu N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.server import monitored_item_service, uaprocessor
from asyncua.server.server import Server

from edge_agent.connectors.opcua import OpcUaSource
from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core import metrics
from edge_agent.simulator.plant import SIGNALS

ASSETS = 200  # x 5 signals = 1,000 monitored items
RATE_HZ = 10.0
REPORT_S = 0.5  # the server reports its ticks and CPU time this often
WARMUP_S = 3.0
GOAL_P99_MS = 500.0
ROOT = Path(__file__).resolve().parent.parent


def _plain_values() -> None:
    """Let the server keep written DataValues as they are (this process only).

    asyncua deep-copies every value a monitored item sees (to guard against a writer that
    changes it afterwards): 80 % of the server's CPU at 10,000 values/s, more than one core,
    so the server fell behind and the figure measured it, not the client. This server
    writes a new DataValue each time and never changes one.
    """

    def keep(self: monitored_item_service.MonitoredItemValues, value: ua.DataValue) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = value

    monitored_item_service.MonitoredItemValues.set_current_datavalue = keep  # type: ignore[method-assign,assignment]


def _sample_publish_lag(samples: list[float]) -> None:
    """As each publish response leaves the server, note how old its values are (1 in 20).

    That part of the lag is the server's: its publishing interval (a value waits for the
    next one) and, on a busy machine, its waiting for CPU. What the bench measures beyond
    it is the client's: encoding, transfer, decoding, handing on.
    """
    original = uaprocessor.UaProcessor.forward_publish_response

    async def forward(
        self: uaprocessor.UaProcessor, result: ua.PublishResult, request: Any
    ) -> None:
        now = time.time()
        for notification in result.NotificationMessage.NotificationData or ():
            if isinstance(notification, ua.DataChangeNotification):
                samples.extend(
                    now - item.Value.SourceTimestamp.timestamp()
                    for item in notification.MonitoredItems[::20]
                    if item.Value is not None and item.Value.SourceTimestamp is not None
                )
        await original(self, result, request)

    uaprocessor.UaProcessor.forward_publish_response = forward  # type: ignore[method-assign,assignment]


def _pin(cpu: int | None) -> None:
    """Run this process on one CPU (None: leave it to the scheduler)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def serve(cpu: int | None) -> None:
    """The server alone (its own process), as a PLC would be: print its endpoint and node map,
    then its tick count and CPU time every half second.

    One folder per asset, one Double per signal. Every tick (RATE_HZ) writes all of them with
    one source timestamp, taken at the tick: the lag measured is from there. A tick that
    falls behind is not made up in a burst; the count says how many were written.
    """
    _pin(cpu)
    _plain_values()
    samples: list[float] = []
    _sample_publish_lag(samples)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = Server()
        await server.init()
        server.set_endpoint("opc.tcp://127.0.0.1:0")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:edge-agent:bench")
        nodes: list[ua.NodeId] = []
        node_map: list[dict[str, str]] = []
        for i in range(ASSETS):
            asset = f"pump-{i:03d}"
            folder = await server.nodes.objects.add_folder(ns, asset)
            for signal_name in SIGNALS:
                var = await folder.add_variable(ns, signal_name, 0.0, ua.VariantType.Double)
                nodes.append(var.nodeid)
                node_map.append(
                    {"node_id": var.nodeid.to_string(), "asset": asset, "signal": signal_name}
                )
        async with server:
            port = server.bserver.port if server.bserver is not None else 0
            hello = {"endpoint": f"opc.tcp://127.0.0.1:{port}", "nodes": node_map}
            print("SERVER " + json.dumps(hello), flush=True)
            ticker = asyncio.create_task(_tick(server, nodes, stop, samples))
            await stop.wait()
            ticker.cancel()

    asyncio.run(run())


async def _tick(
    server: Server, nodes: list[ua.NodeId], stop: asyncio.Event, samples: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    interval = 1 / RATE_HZ
    ticks = 0
    due = reported = loop.time()
    while not stop.is_set():
        stamp = ua.DateTime.fromtimestamp(time.time(), UTC)
        for k, node in enumerate(nodes):
            value = ua.Variant(k + ticks % 1000 / 1000, ua.VariantType.Double)
            await server.write_attribute_value(
                node, ua.DataValue(value, SourceTimestamp=stamp, ServerTimestamp=stamp)
            )
        ticks += 1
        if loop.time() - reported >= REPORT_S:
            reported = loop.time()
            lags = json.dumps([round(lag, 4) for lag in samples])
            samples.clear()
            print(f"STEPS {ticks} {time.monotonic()} {time.process_time()} {lags}", flush=True)
        due += interval
        if loop.time() - due > 1.0:  # far behind (a busy machine): skip ahead, never burst
            due = loop.time()
        await asyncio.sleep(max(0.0, due - loop.time()))


class _Server:
    """The server process, and the tick counts and CPU time it reports (read on a thread)."""

    def __init__(self, cpu: int | None) -> None:
        where = [] if cpu is None else ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_opcua", "serve", *where],
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
        self.reports: list[tuple[float, int, float]] = []  # (monotonic, ticks, CPU seconds)
        self.lags: list[tuple[float, list[float]]] = []  # (monotonic, lag at publish: seconds)

    async def follow(self) -> None:
        """Collect the reports until the server's output ends."""
        assert self.proc.stdout is not None
        while line := await asyncio.to_thread(self.proc.stdout.readline):
            if line.startswith("STEPS "):
                _, n, t, cpu, lags = line.split(maxsplit=4)
                self.reports.append((float(t), int(n), float(cpu)))
                self.lags.append((float(t), json.loads(lags)))

    def since(self, t: float) -> tuple[int, float, float]:
        """Ticks, CPU seconds and wall seconds from monotonic time `t` to the last report."""
        if not self.reports:
            return 0, 0.0, 0.0
        before = [r for r in self.reports if r[0] <= t] or [(t, 0, 0.0)]
        (t0, n0, c0), (t1, n1, c1) = before[-1], self.reports[-1]
        return n1 - n0, c1 - c0, t1 - t0

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


async def _run(seconds: float, server_cpu: int | None) -> None:
    server = _Server(server_cpu)
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
            cpu0 = time.process_time()
            while (elapsed := time.monotonic() - start) < seconds + WARMUP_S:
                await asyncio.sleep(1.0)
                depth.append((elapsed, int(metrics.OPCUA_BUFFERED._value.get())))
            client_cpu = time.process_time() - cpu0
            ticks, server_cpu_s, server_wall = server.since(warm)
            # a report covers the half second before it
            in_server = [lag for t, lags in server.lags if t > warm + REPORT_S for lag in lags]
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
        f"the server wrote {ticks * ASSETS * len(SIGNALS) / max(server_wall, 1e-9):,.0f} "
        f"using {100 * server_cpu_s / max(server_wall, 1e-9):.0f} % of a core)"
    )
    print(
        f"client CPU: {100 * client_cpu / seconds:.0f} % of a core, "
        f"{1e6 * client_cpu / max(count, 1):.1f} us per reading"
    )
    p99 = _p(measured, 0.99) * 1000
    print(
        f"lag source ts -> pipeline (server in its own process): median "
        f"{statistics.median(measured) * 1000:.0f} ms, p99 {p99:.0f} ms (goal p99 <= "
        f"{GOAL_P99_MS:g} ms: {'met' if p99 <= GOAL_P99_MS else 'NOT met'})"
    )
    if in_server:
        print(
            f"  of it in the server, before its publish response left (its publishing "
            f"interval, its wait for CPU): median {statistics.median(in_server) * 1000:.0f} ms, "
            f"p99 {_p(in_server, 0.99) * 1000:.0f} ms"
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
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=None,
        help="pin the server process to this CPU and the client to the others",
    )
    args, _ = parser.parse_known_args()  # `python -m bench opcua` passes bench names too
    if args.server_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {args.server_cpu} or {args.server_cpu})
    asyncio.run(_run(args.seconds, args.server_cpu))


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        cpu = sys.argv[3:4] if sys.argv[2:3] == ["--cpu"] else []
        serve(int(cpu[0]) if cpu else None)
    else:
        main()
