"""Ingest benchmark: the agent's end-to-end readings/s against a bare paho subscriber.

A separate publisher process sends a fixed workload (messages of one sample of five
signals, over several assets) through a real mosquitto as fast as it can, QoS 0. Each
subscriber runs in its own process so its peak RSS is its own:
- bare: paho, `json.loads` of each message, nothing else (the floor for Python);
- agent: the real agent in process (MQTT source -> frames -> gate -> ONNX scorer -> rules
  -> outbox -> uplink), timed until every window the workload yields has been scored.
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

import numpy as np

from edge_agent.simulator.broker import running_broker

ASSETS = 12
SAMPLES_PER_ASSET = 8_500  # 102,000 messages, 510,000 signal values
SIGNALS = ("temperature", "vibration", "current", "pressure", "flow")
MEANS = (55.0, 2.2, 40.0, 4.0, 80.0)
TOPIC = "bench/{asset}/telemetry"


def _payloads() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.01, size=(SAMPLES_PER_ASSET, ASSETS, len(SIGNALS)))
    start = 1_750_000_000.0
    out = []
    for t in range(SAMPLES_PER_ASSET):
        for a in range(ASSETS):
            values = {
                s: round(m * (1 + noise[t, a, i]), 4)
                for i, (s, m) in enumerate(zip(SIGNALS, MEANS, strict=True))
            }
            body = json.dumps({"ts": start + t, **values}).encode()
            out.append((f"bench/pump-{a}/telemetry", body))
    return out


def publisher(port: int) -> None:
    """Publish the workload as fast as paho can (run as its own process)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    payloads = _payloads()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, body in payloads:
        client.publish(topic, body, qos=0)
    time.sleep(1.0)
    client.disconnect()
    client.loop_stop()


def bare(port: int, expected: int) -> dict[str, float]:
    """Receive with paho, `json.loads` each message, count."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    state = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        json.loads(msg.payload)
        now = time.perf_counter()
        if state["n"] == 0:
            state["first"] = now
        state["n"] += 1
        state["last"] = now

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("bench/+/telemetry", qos=0)
    client.loop(1.0)
    print("READY", flush=True)
    idle_since = time.monotonic()
    seen = 0
    while state["n"] < expected and time.monotonic() - idle_since < 10:
        client.loop(0.1)
        if state["n"] != seen:
            seen, idle_since = int(state["n"]), time.monotonic()
    return {"messages": state["n"], "seconds": state["last"] - state["first"]}


def agent(port: int, expected: int) -> dict[str, float]:
    """Run the real agent in this process; time from the first reading to the last window."""
    from edge_agent.core import logs, metrics
    from edge_agent.daemon.app import run_agent
    from edge_agent.daemon.settings import load_settings

    os.environ.update(
        {
            "EDGE_MQTT__PORT": str(port),
            "EDGE_AGENT__STATE_DIR": tempfile.mkdtemp(prefix="edge-bench-"),
            "EDGE_AGENT__GATEWAY_ID": "bench",
            "EDGE_INGEST__TOPICS": '["bench/{asset}/telemetry"]',
            "EDGE_LOG__LEVEL": "warning",
        }
    )
    logs.configure("warning", "json")
    settings = load_settings()
    readings = metrics.READINGS_IN.labels("mqtt")
    expected_readings = expected * len(SIGNALS)

    async def watch(stop: asyncio.Event) -> dict[str, float]:
        while readings._value.get() == 0:
            await asyncio.sleep(0.001)
        first = time.perf_counter()
        last_count, idle_since = -1.0, time.monotonic()
        while time.monotonic() - idle_since < 3.0:
            count = readings._value.get()
            if count != last_count:
                last_count, idle_since, last = count, time.monotonic(), time.perf_counter()
            if count >= expected_readings:
                break
            await asyncio.sleep(0.002)
        # Let the pipeline finish the windows of the last batch.
        await asyncio.sleep(0)
        last = time.perf_counter()
        stop.set()
        return {"messages": last_count / len(SIGNALS), "seconds": last - first}

    async def main() -> dict[str, float]:
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(run_agent(settings, stop, ready))
        await ready.wait()  # subscribed: a publisher started earlier would be lost (QoS 0)
        print("READY", flush=True)
        result = await watch(stop)
        await task
        windows = sum(
            metrics.WINDOWS.labels(o)._value.get()
            for o in ("scored", "skipped", "incomplete", "dropped")
        )
        result["windows"] = windows
        return result

    return asyncio.run(main())


def _child(mode: str, port: int, expected: int) -> None:
    result = bare(port, expected) if mode == "bare" else agent(port, expected)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def _measure(mode: str, port: int, expected: int) -> dict[str, float]:
    sub = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", mode, str(port), str(expected)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert sub.stdout is not None
    for line in sub.stdout:
        if line.strip() == "READY":
            break
    pub = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", "publish", str(port), "0"],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        out, _ = sub.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        # A run that never ends is a finding, not a figure: say so and stop both.
        sub.kill()
        pub.kill()
        msg = f"{mode} subscriber did not finish within 180 s"
        raise RuntimeError(msg) from None
    pub.wait(30)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    msg = f"{mode} subscriber gave no result: {out[-2000:]}"
    raise RuntimeError(msg)


def main() -> None:
    """Run both subscribers against the same workload and print the figures."""
    expected = ASSETS * SAMPLES_PER_ASSET
    print(
        f"ingest: {expected:,} messages ({expected * len(SIGNALS):,} readings) over "
        f"{ASSETS} assets, QoS 0, publisher in its own process"
    )
    results = {}
    with running_broker() as broker:
        for mode in ("bare", "agent"):
            results[mode] = r = _measure(mode, broker.port, expected)
            rate = r["messages"] / r["seconds"] if r["seconds"] else 0.0
            r["rate"] = rate
            print(
                f"  {mode:5s}: {int(r['messages']):,}/{expected:,} messages in {r['seconds']:.2f} s"
                f" = {rate:,.0f} msgs/s ({rate * len(SIGNALS):,.0f} readings/s), "
                f"peak RSS {r['max_rss_mb']:.0f} MB"
                + (f", {int(r['windows']):,} windows" if "windows" in r else "")
            )
    ratio = results["agent"]["rate"] / results["bare"]["rate"] if results["bare"]["rate"] else 0
    print(f"  agent / bare paho: {ratio:.2f}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "publish":
        publisher(int(sys.argv[2]))
    elif len(sys.argv) >= 4:
        _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
