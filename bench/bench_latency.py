"""Latency: from the reading that completes a faulty window to the PUBACK of its advice.

100 simulated pumps, each with a fault (cavitation, misalignment, overheating or a stuck
sensor, in turn) whose onset is staggered so that recommendations come one by one, not in
a burst. A publisher process sends them paced at a fixed number of readings per second
(five readings per message, one message per pump and second of event time, so event time
runs faster than the wall clock) and notes when it sent each message. The real agent runs
in its own process and notes when it read the broker's PUBACK of each recommendation. A
recommendation names its window's grid time `window_ts`; the reading that completed that
window is the pump's first one after it (frames.py), so

    latency = PUBACK of the recommendation - send time of the pump's reading at window_ts + 1,

the send time being when the publisher wrote that reading's message to its socket.

Both processes read CLOCK_MONOTONIC, which Linux shares between processes.

    python -m bench.bench_latency [--rates 2000 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.simulator.broker import running_broker

ASSETS = 100
SAMPLES = 150  # seconds of event time per pump
KINDS = ("cavitation", "misalignment", "overheating", "stuck_sensor")  # raise within ~30 s
FIRST_ONSET_S = 40
SIGNALS = ("temperature", "vibration", "current", "pressure", "flow")
ROOT = Path(__file__).resolve().parent.parent
GOAL_P99_MS = 20.0  # at GOAL_RATE readings/s (issue 14)
GOAL_RATE = 2000.0


def _payloads(start: float) -> list[list[tuple[str, bytes]]]:
    """Per second of event time, one message per pump."""
    from edge_agent.simulator.plant import FaultSpec, simulate

    traces = [
        simulate(
            f"pump-{a:03d}",
            a,
            SAMPLES,
            start,
            FaultSpec(KINDS[a % len(KINDS)], FIRST_ONSET_S + (a * 7) % 60),
        ).values.round(4)
        for a in range(ASSETS)
    ]
    return [
        [
            (
                f"lat/pump-{a:03d}/telemetry",
                json.dumps(
                    {"ts": start + t, **dict(zip(SIGNALS, traces[a][t].tolist(), strict=True))}
                ).encode(),
            )
            for a in range(ASSETS)
        ]
        for t in range(SAMPLES)
    ]


def publisher(port: int, rate: float, start: float, out: Path) -> None:
    """Send the workload paced at `rate` readings/s; save each message's send time.

    No network thread: each publish writes its packet to the socket within the call, so the
    time noted just before it is when the reading left. (With paho's thread the write came
    whenever that thread next held the GIL, and the time noted after `publish` returned
    could be milliseconds after the agent had already read the message.) Nagle is off, as
    on the agent's own client: a sensor's small packets are not held for the broker's ACK.
    """
    import socket

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

    seconds = _payloads(start)
    sent = np.zeros((SAMPLES, ASSETS))
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-lat-pub")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=3600)  # no PINGREQ due within a run
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while not client.is_connected():
        client.loop(timeout=0.1)  # reads the CONNACK
    interval = len(SIGNALS) / rate  # seconds between messages
    t0 = time.monotonic() + 0.2
    i = 0
    for t, messages in enumerate(seconds):
        for a, (topic, body) in enumerate(messages):
            ahead = t0 + i * interval - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            sent[t, a] = time.monotonic()
            if client.publish(topic, body, qos=0).rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise SystemExit(f"publisher: publish to {topic} failed")
            while client.want_write():  # the socket's buffer was full: finish the write
                client.loop_write()
            i += 1
    np.save(out, sent)
    client.disconnect()


def agent(port: int, expected_readings: int) -> None:
    """Run the agent; print every recommendation's asset, window_ts and PUBACK time."""
    import paho.mqtt.client as paho
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from edge_agent.connectors.mqtt import MqttClient
    from edge_agent.core import logs, metrics
    from edge_agent.core.readings import Outgoing
    from edge_agent.daemon.app import run_agent
    from edge_agent.daemon.settings import load_settings

    os.environ.update(
        {
            "EDGE_MQTT__PORT": str(port),
            "EDGE_AGENT__STATE_DIR": tempfile.mkdtemp(prefix="edge-bench-lat-"),
            "EDGE_AGENT__GATEWAY_ID": "bench",
            "EDGE_INGEST__TOPICS": '["lat/{asset}/telemetry"]',
            "EDGE_LOG__LEVEL": "warning",
            "EDGE_SERVICE__HTTP_PORT": "0",
        }
    )
    logs.configure("warning", "json")
    acks: list[tuple[str, float, float]] = []
    send, on_publish = MqttClient._send, MqttClient._on_publish
    sent: dict[tuple[int, int], Outgoing] = {}  # (client, mid) -> recommendation in flight

    # Every publish of the outbox, whichever way (submit, publish), is handed to paho by
    # _send; the PUBACK comes to _on_publish as it is read. Noted there, not in a callback
    # of the publish's future, which runs a turn of the loop later.
    def timed_send(self: MqttClient, msg: Outgoing) -> asyncio.Future[None]:
        fut = send(self, msg)
        if "/recommendations/" in msg.topic or "/needs_review/" in msg.topic:
            pending = self._pending
            mid = next(reversed(pending))
            if pending[mid] is fut:
                sent[(id(self), mid)] = msg
        return fut

    def timed_on_publish(
        self: MqttClient, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        now = time.monotonic()
        msg = sent.pop((id(self), mid), None)
        on_publish(self, _c, _u, mid, reason, _p)
        if msg is not None and not reason.is_failure:
            ts = json.loads(msg.payload).get("window_ts")
            if isinstance(ts, int | float):
                acks.append((msg.key, float(ts), now))

    MqttClient._send = timed_send  # type: ignore[method-assign]
    MqttClient._on_publish = timed_on_publish  # type: ignore[method-assign]
    readings = metrics.READINGS_IN.labels("mqtt")

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_agent(load_settings(), stop, ready))
        await ready.wait()
        print("READY", flush=True)
        deadline = time.monotonic() + 600
        while readings._value.get() < expected_readings and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the last windows' advice on its way
        stop.set()
        await task

    asyncio.run(main())
    print("RESULT " + json.dumps(acks), flush=True)


def _run(port: int, rate: float) -> None:
    start = float(int(time.time()) - 3600)  # an hour back: event time outruns the clock
    sent_file = Path(tempfile.mkdtemp(prefix="edge-bench-lat-")) / "sent.npy"
    expected = SAMPLES * ASSETS * len(SIGNALS)
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_latency", "agent", str(port), str(expected)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "READY":
            break
    args = ["publish", str(port), str(rate), str(start), str(sent_file)]
    subprocess.run(
        [sys.executable, "-m", "bench.bench_latency", *args], cwd=ROOT, check=True, timeout=900
    )
    out, _ = child.communicate(timeout=660)
    acks = next(json.loads(x[7:]) for x in out.splitlines() if x.startswith("RESULT "))
    sent = np.load(sent_file)
    lat = []
    for asset, window_ts, acked in acks:
        t = round(window_ts - start) + 1  # the pump's first reading after the window's end
        if 0 < t < SAMPLES and asset.startswith("pump-"):
            lat.append((acked - sent[t, int(asset[5:])]) * 1000)
    if not lat:
        print(f"  {rate:>6,.0f} readings/s: no recommendation came back")
        return
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    verdict = (
        ""
        if rate != 2000
        else (" (goal p99 <= 20 ms: " + ("met)" if p99 <= GOAL_P99_MS else "NOT met)"))
    )
    print(
        f"  {rate:>6,.0f} readings/s: reading completing a faulty window -> PUBACK of its "
        f"recommendation: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms "
        f"over {len(lat)} recommendations{verdict}"
    )


def main() -> None:
    """Print latency at each rate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", type=float, nargs="+", default=[2000.0, 20000.0])
    args, _ = parser.parse_known_args()  # `python -m bench latency` passes bench names too
    print(
        f"latency: {ASSETS} pumps, each with a fault; {SAMPLES} s of event time each, "
        "QoS 0 in, QoS 1 out, one local mosquitto"
    )
    with running_broker() as broker:
        for rate in args.rates:
            _run(broker.port, rate)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "publish":
        publisher(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "agent":
        agent(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
