"""Ingest benchmark: the agent's end-to-end readings/s against a bare paho subscriber.

A separate publisher process sends a fixed workload through a real mosquitto as fast as it
can, QoS 0: the plant simulator's pumps (`ASSETS` of them, `SAMPLES_PER_ASSET` one-second
samples of five signals each, one message per sample), `FAULTY` of them with a fault from
`ONSET_S` on, so that the rules have something to say. Each subscriber runs in its own
process so that its peak RSS and CPU time are its own:
- bare: paho, `json.loads` of each message, nothing else (the floor for Python);
- agent: the real agent in process (MQTT source -> frames -> gate -> scorer (the backend
  EDGE_MODEL__BACKENDS picks: LiteRT first on a box without an NVIDIA GPU) -> rules
  -> retention -> outbox -> uplink), timed from the first reading until the last window is
  scored and advised on. It reports how many windows were scored, skipped by the gate or
  dropped, and how many recommendations it made, so a faster run cannot be one that skipped
  work.
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
from typing import Any

from edge_agent.simulator.broker import running_broker

ASSETS = 12
SAMPLES_PER_ASSET = 8_500  # 102,000 messages, 510,000 signal values
FAULTY = 6  # assets 0..5 get one fault each, of each kind the simulator has
ONSET_S = 3_000.0
SIGNALS = ("temperature", "vibration", "current", "pressure", "flow")
START_TS = 1_750_000_000.0
IDLE_END_S = 0.5  # no progress this long after the last reading: the run is over


def _payloads() -> list[tuple[str, bytes]]:
    from edge_agent.simulator.plant import FAULTS, FaultSpec, simulate

    traces = [
        simulate(
            f"pump-{a}",
            a,
            SAMPLES_PER_ASSET,
            START_TS,
            FaultSpec(FAULTS[a % len(FAULTS)], ONSET_S + 60 * a) if a < FAULTY else None,
        ).values.round(4)
        for a in range(ASSETS)
    ]
    out = []
    for t in range(SAMPLES_PER_ASSET):
        for a in range(ASSETS):
            values = dict(zip(SIGNALS, traces[a][t].tolist(), strict=True))
            body = json.dumps({"ts": START_TS + t, **values}).encode()
            out.append((f"bench/pump-{a}/telemetry", body))
    return out


def _rss_mb() -> float:
    with Path("/proc/self/status").open() as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


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

    state = {"n": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0, "cpu1": 0.0}

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        json.loads(msg.payload)
        now = time.perf_counter()
        if state["n"] == 0:
            state["first"], state["cpu0"] = now, time.process_time()
        state["n"] += 1
        state["last"], state["cpu1"] = now, time.process_time()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe("bench/+/telemetry", qos=0)
    client.loop(1.0)
    ready_rss = _rss_mb()
    print("READY", flush=True)
    idle_since = time.monotonic()
    seen = 0
    while state["n"] < expected and time.monotonic() - idle_since < 10:
        client.loop(0.1)
        if state["n"] != seen:
            seen, idle_since = int(state["n"]), time.monotonic()
    return {
        "messages": state["n"],
        "seconds": state["last"] - state["first"],
        "cpu_s": state["cpu1"] - state["cpu0"],
        "ready_rss_mb": ready_rss,
    }


def _count(counter: object) -> dict[str, float]:
    """A labelled prometheus Counter's values by its first label."""
    out: dict[str, float] = {}
    for family in counter.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = next(iter(sample.labels.values()), "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _in_use(gauge: object) -> list[str]:
    """The labels of a labelled gauge's children set to 1."""
    return [
        next(iter(sample.labels.values()), "")
        for family in gauge.collect()  # type: ignore[attr-defined]
        for sample in family.samples
        if sample.value == 1
    ]


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
            "EDGE_SERVICE__HTTP_PORT": "0",  # the default port may be taken by another run
        }
    )
    logs.configure("warning", "json")
    settings = load_settings()
    readings = metrics.READINGS_IN.labels("mqtt")
    expected_readings = expected * len(SIGNALS)

    def progress() -> tuple[float, ...]:
        return (
            readings._value.get(),
            sum(_count(metrics.WINDOWS).values()),
            sum(_count(metrics.RECOMMENDATIONS).values()),
        )

    async def watch(stop: asyncio.Event) -> dict[str, float]:
        while readings._value.get() == 0:
            await asyncio.sleep(0.001)
        first, cpu0 = time.perf_counter(), time.process_time()
        last, cpu1 = first, cpu0
        seen = progress()
        while True:
            await asyncio.sleep(0.002)
            now = progress()
            if now != seen:
                seen, last, cpu1 = now, time.perf_counter(), time.process_time()
            elif time.perf_counter() - last > (IDLE_END_S if now[0] >= expected_readings else 5):
                break
        stop.set()
        return {"messages": seen[0] / len(SIGNALS), "seconds": last - first, "cpu_s": cpu1 - cpu0}

    async def main() -> dict[str, float]:
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(run_agent(settings, stop, ready))
        await ready.wait()  # subscribed: a publisher started earlier would be lost (QoS 0)
        ready_rss = _rss_mb()
        for name in _in_use(metrics.BACKEND):  # the backend that scores: RSS depends on it
            print(f"BACKEND {name}", flush=True)
        print("READY", flush=True)
        result = await watch(stop)
        await task
        windows = _count(metrics.WINDOWS)
        return result | {
            "ready_rss_mb": ready_rss,
            "scored": windows.get("scored", 0.0),
            "skipped": windows.get("skipped", 0.0),
            "dropped": windows.get("dropped", 0.0),
            "incomplete": windows.get("incomplete", 0.0),
            "raised": _count(metrics.RECOMMENDATIONS).get("raise", 0.0),
            "recommendations": sum(_count(metrics.RECOMMENDATIONS).values()),
        }

    return asyncio.run(main())


def _child(mode: str, port: int, expected: int) -> None:
    result = bare(port, expected) if mode == "bare" else agent(port, expected)
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def _measure(mode: str, port: int, expected: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    sub = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", mode, str(port), str(expected)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    assert sub.stdout is not None
    before: list[str] = []  # what the child said before READY (its backend)
    for line in sub.stdout:
        if line.strip() == "READY":
            break
        before.append(line.strip())
    pub = subprocess.Popen(
        [sys.executable, "-m", "bench.ingest", "publish", str(port), "0"], cwd=root
    )
    try:
        out, _ = sub.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        # A run that never ends is a finding, not a figure: say so and stop both.
        sub.kill()
        pub.kill()
        msg = f"{mode} subscriber did not finish within 300 s"
        raise RuntimeError(msg) from None
    pub.wait(30)
    backend = [line[8:] for line in before if line.startswith("BACKEND ")]
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:])) | {"backend": ", ".join(backend) or "-"}
    msg = f"{mode} subscriber gave no result: {out[-2000:]}"
    raise RuntimeError(msg)


def _expected_windows() -> int:
    from edge_agent.models.manifest import load_manifest

    m = load_manifest(None)
    return ASSETS * ((SAMPLES_PER_ASSET - 1 - m.window) // m.hop + 1)


def main() -> None:
    """Run both subscribers against the same workload and print the figures."""
    expected = ASSETS * SAMPLES_PER_ASSET
    readings = expected * len(SIGNALS)
    print(
        f"ingest: {expected:,} messages ({readings:,} readings) over {ASSETS} simulated pumps, "
        f"{FAULTY} with a fault; QoS 0, publisher in its own process"
    )
    results = {}
    with running_broker() as broker:
        for mode in ("bare", "agent"):
            results[mode] = r = _measure(mode, broker.port, expected)
            rate = r["messages"] / r["seconds"] if r["seconds"] else 0.0
            r["rate"] = rate
            got = r["messages"] * len(SIGNALS)
            print(
                f"  {mode:5s}: {int(r['messages']):,}/{expected:,} messages in {r['seconds']:.2f} s"
                f" = {rate:,.0f} msgs/s ({rate * len(SIGNALS):,.0f} readings/s); "
                f"CPU {r['cpu_s'] * 1000 / got if got else 0:.3f} s per 1,000 readings; "
                f"RSS {r['ready_rss_mb']:.0f} MB ready, peak {r['max_rss_mb']:.0f} MB"
            )
    a = results["agent"]
    print(
        f"  agent work: {int(a['scored']):,} windows scored, {int(a['skipped']):,} skipped by "
        f"the gate, {int(a['dropped']):,} dropped, {int(a['incomplete']):,} incomplete "
        f"(of {_expected_windows():,} the workload yields); {int(a['recommendations'])} "
        f"recommendations ({int(a['raised'])} raised); scored by {a['backend']}"
    )
    ratio = a["rate"] / results["bare"]["rate"] if results["bare"]["rate"] else 0
    print(f"  agent / bare paho: {ratio:.2f}")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "publish":
        publisher(int(sys.argv[2]))
    elif len(sys.argv) >= 4:
        _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
