"""`edge-agent demo`: the agent against the built-in plant simulator, on a private broker.

Starts Debian's mosquitto on a free loopback port, a few simulated pumps publishing over
MQTT faster than real time (one of them develops a fault), and the agent itself, then prints
each recommendation as it arrives. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.daemon import logs
from edge_agent.daemon.app import run_agent, topic_prefix
from edge_agent.daemon.readings import Outgoing, Priority, new_id
from edge_agent.daemon.settings import Settings, load_settings
from edge_agent.simulator.broker import running_broker
from edge_agent.simulator.plant import FaultSpec, PumpStream

if TYPE_CHECKING:
    import argparse


def _demo_settings(base: Settings, port: int, state_dir: Path) -> Settings:
    return base.model_copy(
        update={
            "mqtt": base.mqtt.model_copy(update={"host": "127.0.0.1", "port": port}),
            "agent": base.agent.model_copy(update={"state_dir": state_dir, "gateway_id": "demo"}),
            "log": base.log.model_copy(update={"level": "warning", "format": "console"}),
            # The demo may run beside a real agent: its metrics endpoint takes any free port.
            "service": base.service.model_copy(update={"http_port": 0}),
        }
    )


def _clock(ts: float, start: float) -> str:
    return f"T+{int(ts - start) // 60:02d}:{int(ts - start) % 60:02d}"


def _print_recommendation(payload: bytes, start_ts: float) -> None:
    try:
        rec = json.loads(payload)
    except ValueError:
        print(f"(unreadable recommendation: {payload[:200]!r})")
        return
    ts = float(rec.get("window_ts", start_ts))
    kind = str(rec.get("kind", "?")).upper()
    severity = str(rec.get("severity", "?")).upper()
    asset = rec.get("asset", "?")
    print(f"\n[{_clock(ts, start_ts)} simulated] {kind} {severity} {asset}")
    for key in ("title", "explanation"):
        if rec.get(key):
            print(f"  {rec[key]}")
    action = rec.get("action") or {}
    if isinstance(action, dict) and action.get("text"):
        due = action.get("due_within_h")
        print(f"  action: {action['text']}" + (f" (within {due} h)" if due else ""))
    print(f"  id {rec.get('id')}", flush=True)


async def _simulate(
    client: MqttClient, pumps: list[PumpStream], speed: float, stop: asyncio.Event
) -> None:
    """Publish one sample per pump per simulated second, `speed` times faster than real time."""
    period = 1.0 / speed
    next_at = time.monotonic()
    while not stop.is_set():
        for pump in pumps:
            ts, values = pump.step()
            body = json.dumps({"ts": round(ts, 3), **values}).encode()
            await client.publish(
                Outgoing(
                    f"plant/{pump.asset}/telemetry", body, new_id(), pump.asset, Priority.DIGEST, 0
                )
            )
        next_at += period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _demo(args: argparse.Namespace, base: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    start_ts = float(int(datetime.now(UTC).timestamp()))
    n = max(1, args.assets)
    fault = FaultSpec(args.fault, args.onset)
    pumps = [
        PumpStream(
            f"pump-{i + 1}", seed=i + 1, start_ts=start_ts, fault=fault if i == n - 1 else None
        )
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as state, running_broker() as broker:
        settings = _demo_settings(base, broker.port, Path(state))
        prefix = topic_prefix(settings)
        print(
            f"edge-agent demo: {n} pumps on mosquitto 127.0.0.1:{broker.port}, "
            f"{args.speed:g}x real time; pump-{n} develops {args.fault} at "
            f"{_clock(start_ts + args.onset, start_ts)} simulated.\n"
            f"Recommendations arrive on {prefix}/recommendations/<asset>. Ctrl-C stops.",
            flush=True,
        )
        agent = asyncio.create_task(run_agent(settings, stop), name="agent")
        async with MqttClient(settings.mqtt, client_id="edge-demo-plant", name="demo") as client:
            client.subscribe(
                f"{prefix}/recommendations/#",
                1,
                lambda _topic, payload: _print_recommendation(payload, start_ts),
            )
            await client.connected.wait()
            sim = asyncio.create_task(_simulate(client, pumps, args.speed, stop), name="plant")
            if args.duration > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration)
                stop.set()
            await stop.wait()
            sim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim
            await agent
    print("\nedge-agent demo stopped.", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C (or `--duration`); exit code 0 on a clean stop."""
    base = load_settings(args.env_file)
    logs.configure("warning", "console")
    asyncio.run(_demo(args, base))
    return 0
