"""Sparkplug B ingest against JSON ingest, on the same readings.

The samples are the first 3,000 of each of the ingest benchmark's 12 assets (bench/ingest.py:
36,000 messages of one sample of five signals). As JSON they are what that benchmark sends;
as Sparkplug B each asset is a device of one edge node: a DBIRTH carrying its first sample,
then DDATA by alias, as an Ignition or Kepware gateway sends them.

- decode: one message to readings, in this process: the JSON mapper (connectors/mapping.py)
  against the Sparkplug sessions (connectors/sparkplug_session.py), best of five runs.
- agent: the real agent end to end through mosquitto (source -> frames -> gate -> scorer ->
  rules -> outbox), once with the mqtt source and once with the sparkplug source, a
  publisher process sending as fast as paho can at QoS 0; readings/s from the first to the
  last reading, and the agent's peak RSS.

    python -m bench sparkplug
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from bench.ingest import ASSETS, SIGNALS, _payloads
from edge_agent.connectors.mapping import PayloadMapper
from edge_agent.connectors.settings import IngestSettings, SparkplugSettings
from edge_agent.connectors.sparkplug_b_pb2 import Payload
from edge_agent.connectors.sparkplug_session import Sessions
from edge_agent.simulator.broker import running_broker

Transport = Literal["json", "sparkplug"]
SAMPLES = 3_000  # per asset
DOUBLE = 10  # Sparkplug B datatype
NODE = "spBv1.0/bench/{kind}/bench-node"
JSON_TOPICS = '["bench/{asset}/telemetry"]'
ROOT = Path(__file__).resolve().parent.parent


def workload(transport: Transport) -> list[tuple[str, bytes]]:
    """The messages of one transport, in publishing order (births first for Sparkplug)."""
    samples = _payloads()[: SAMPLES * ASSETS]
    if transport == "json":
        return samples
    node = Payload(timestamp=1, seq=0)
    node.metrics.add(name="bdSeq", datatype=8, long_value=0)
    out = [(NODE.format(kind="NBIRTH"), node.SerializeToString())]
    born: set[str] = set()
    for i, (topic, body) in enumerate(samples, start=1):
        asset = topic.split("/")[1]
        doc = json.loads(body)
        ms = round(doc["ts"] * 1000)
        p = Payload(timestamp=ms, seq=i % 256)
        kind = "DDATA" if asset in born else "DBIRTH"
        for alias, signal in enumerate(SIGNALS, start=1):
            m = p.metrics.add(alias=alias, timestamp=ms, double_value=doc[signal])
            if kind == "DBIRTH":
                m.name, m.datatype = signal, DOUBLE
        born.add(asset)
        out.append((f"{NODE.format(kind=kind)}/{asset}", p.SerializeToString()))
    return out


def decode_figures() -> dict[Transport, float]:
    """µs per message for each decoder on its own workload (best of five)."""
    mapper = PayloadMapper(IngestSettings.model_validate({"topics": json.loads(JSON_TOPICS)}))
    results: dict[Transport, float] = {}
    for transport in ("json", "sparkplug"):
        messages = workload(transport)
        runs = []
        for _ in range(5):
            sessions = Sessions(SparkplugSettings(), lambda _g, _n: None)
            handle = mapper.decode if transport == "json" else sessions.handle
            args = () if transport == "json" else (0.0,)
            started = time.perf_counter()
            n = sum(len(handle(t, b, *args)) for t, b in messages)
            runs.append(time.perf_counter() - started)
        assert n == SAMPLES * ASSETS * len(SIGNALS), n
        results[transport] = min(runs) / len(messages) * 1e6
    return results


def publish(transport: Transport, port: int) -> None:
    """Send the workload as fast as paho can (its own process)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    messages = workload(transport)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{transport}")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, body in messages[: ASSETS + 1]:  # births (Sparkplug) arrive before any data
        client.publish(topic, body, qos=1).wait_for_publish(10)
    for topic, body in messages[ASSETS + 1 :]:
        client.publish(topic, body, qos=0)
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()


def run_agent(transport: Transport, port: int) -> dict[str, float]:
    """The real agent in this process, timed from its first reading to the last."""
    from edge_agent.core import logs, metrics
    from edge_agent.daemon.app import run_agent as run
    from edge_agent.daemon.settings import load_settings

    source = "mqtt" if transport == "json" else "sparkplug"
    os.environ |= {
        "EDGE_MQTT__PORT": str(port),
        "EDGE_AGENT__STATE_DIR": tempfile.mkdtemp(prefix="edge-bench-"),
        "EDGE_AGENT__GATEWAY_ID": "bench",
        "EDGE_AGENT__SOURCES": json.dumps([source]),
        "EDGE_INGEST__TOPICS": JSON_TOPICS,
        "EDGE_SPARKPLUG__GROUPS": '["bench"]',
        "EDGE_LOG__LEVEL": "warning",
    }
    logs.configure("warning", "json")
    counter = metrics.READINGS_IN.labels(source)
    expected = SAMPLES * ASSETS * len(SIGNALS)

    async def timed(stop: asyncio.Event) -> dict[str, float]:
        while not counter._value.get():
            await asyncio.sleep(0.001)
        first = last = time.perf_counter()
        seen, quiet_since = 0.0, time.monotonic()
        while seen < expected and time.monotonic() - quiet_since < 3.0:
            now = counter._value.get()
            if now != seen:
                seen, quiet_since, last = now, time.monotonic(), time.perf_counter()
            await asyncio.sleep(0.002)
        stop.set()
        return {"readings": seen, "seconds": last - first}

    async def main() -> dict[str, float]:
        stop, ready = asyncio.Event(), asyncio.Event()
        agent = asyncio.create_task(run(load_settings(), stop, ready))
        await ready.wait()
        print("READY", flush=True)
        figures = await timed(stop)
        await agent
        return figures

    figures = asyncio.run(main())
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def agent_figures(transport: Transport, port: int) -> dict[str, float]:
    """Start the agent, then the publisher; the agent's figures."""
    command = [sys.executable, "-m", "bench.bench_sparkplug"]
    agent = subprocess.Popen(
        [*command, "agent", transport, str(port)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert agent.stdout is not None
    if agent.stdout.readline().strip() != "READY":
        agent.kill()
        raise RuntimeError(f"the {transport} agent did not start")
    publisher = subprocess.Popen([*command, "publish", transport, str(port)], cwd=ROOT)
    try:
        out, _ = agent.communicate(timeout=180)
    finally:
        agent.kill()
        publisher.wait(60)
    line = next((x for x in out.splitlines() if x.startswith("FIGURES ")), None)
    if line is None:
        raise RuntimeError(f"the {transport} agent gave no figures: {out[-2000:]}")
    return dict(json.loads(line.removeprefix("FIGURES ")))


def main() -> None:
    """Print both figures for both transports."""
    n = SAMPLES * ASSETS
    print(f"sparkplug: {n:,} messages ({n * len(SIGNALS):,} readings) over {ASSETS} assets")
    decode = decode_figures()
    print(
        f"  decode   json {decode['json']:.1f} µs/msg, sparkplug {decode['sparkplug']:.1f} µs/msg"
        f" ({len(SIGNALS) * 1e6 / decode['sparkplug']:,.0f} readings/s):"
        f" sparkplug / json time {decode['sparkplug'] / decode['json']:.2f}"
    )
    rates: dict[str, float] = {}
    with running_broker() as broker:
        for transport in ("json", "sparkplug"):
            f = agent_figures(transport, broker.port)
            rates[transport] = f["readings"] / f["seconds"] if f["seconds"] else 0.0
            print(
                f"  agent    {transport:9s} {int(f['readings']):,}/{n * len(SIGNALS):,} readings"
                f" in {f['seconds']:.2f} s = {rates[transport]:,.0f} readings/s,"
                f" peak RSS {f['rss_mb']:.0f} MB"
            )
    if rates["json"]:
        print(f"  agent sparkplug / json readings/s: {rates['sparkplug'] / rates['json']:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "agent":
        print("FIGURES " + json.dumps(run_agent(sys.argv[2], int(sys.argv[3]))), flush=True)  # type: ignore[arg-type]
    elif len(sys.argv) == 4 and sys.argv[1] == "publish":
        publish(sys.argv[2], int(sys.argv[3]))  # type: ignore[arg-type]
    else:
        main()
