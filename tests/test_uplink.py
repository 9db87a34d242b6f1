"""The uplink end to end: outage, crash (SIGKILL), status and Will, MQTT 5 message ids.

`python -m tests.test_uplink --port P --state DIR ...` is the small agent this file
kills: an outbox, the uplink client and a producer of numbered recommendations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.connectors.uplink import MqttSink, status_topic, uplink_client
from edge_agent.core.readings import Outgoing
from edge_agent.daemon.outbox.queue import open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.settings import Settings
from edge_agent.simulator.broker import Broker

WAIT_S = 20.0
ASSETS = 5


def agent_settings(port: int, root: str) -> Settings:
    return Settings.model_validate(
        {
            "mqtt": {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5},
            "uplink": {"topic_prefix": f"{root}/{{gateway}}"},
        }
    )


def recommendation(root: str, n: int) -> Outgoing:
    asset = f"a{n % ASSETS}"
    mid = f"{n:07d}"
    body = json.dumps({"id": mid, "asset": asset, "n": n}).encode()
    return Outgoing(f"{root}/gw/recommendations/{asset}", body, mid, key=asset)


# -- the driver (a separate process) ---------------------------------------------------------
async def drive(args: argparse.Namespace) -> None:
    settings = agent_settings(args.port, args.root)
    outbox = open_outbox(OutboxSettings(), Path(args.state))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with uplink_client(settings, "gw") as up:
        deliver = asyncio.create_task(outbox.deliver(MqttSink(up)), name="deliver")
        for n in range(args.start, args.count):
            await outbox.put([recommendation(args.root, n)])
            print(n, flush=True)  # put() returned: the parent may count it as produced
            if args.rate:
                await asyncio.sleep(1 / args.rate)
        while outbox.depth():
            await asyncio.sleep(0.02)
        print("drained", flush=True)
        await stop.wait()
        deliver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deliver
    await outbox.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0)
    asyncio.run(drive(p.parse_args()))


# -- the observer ------------------------------------------------------------------------------
class Observer:
    """A paho subscriber (its own thread) that records payloads and MQTT 5 properties."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="observer", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.reconnect_delay_set(1, 1)
        # A session the broker keeps (and persists across its restart, see `durable_broker`):
        # what arrives before the observer is back is queued for it, not lost to the test.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S)

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [bytes(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def spawn(broker: Broker, state: Path, root: str, **kw: float) -> asyncio.subprocess.Process:
    args = [f"--{k}={v}" for k, v in kw.items()]
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.test_uplink",
        f"--port={broker.port}",
        f"--state={state}",
        f"--root={root}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=Path(__file__).parent.parent,
    )


async def produced_until_killed(
    proc: asyncio.subprocess.Process, after_s: float, *, from_first: bool = False
) -> list[int]:
    """Read the numbers the driver reports; SIGKILL it `after_s` after its start (with
    `from_first`: after its first number, however long its start-up took) or at its end.
    Every number it printed before it died counts."""
    assert proc.stdout is not None
    seen: list[int] = []
    first = asyncio.Event()

    async def read() -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode().strip()
            if text.isdigit():
                seen.append(int(text))
                first.set()
            elif text == "drained":
                return

    reader = asyncio.create_task(read())
    if from_first:
        started = asyncio.create_task(first.wait())
        await asyncio.wait({reader, started}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
    await asyncio.wait({reader}, timeout=after_s)
    proc.kill()
    await proc.wait()
    await reader  # the pipe ends with the process
    return seen


def ids_by_asset(payloads: list[bytes]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for p in payloads:
        doc = json.loads(p)
        out.setdefault(doc["asset"], []).append(doc["n"])
    return out


def check_delivery(payloads: list[bytes], produced: set[int], what: str) -> int:
    """Every produced number arrived, in order per asset; return the duplicate count."""
    got = [json.loads(p)["n"] for p in payloads]
    missing = produced - set(got)
    assert not missing, f"{what}: {len(missing)} missing, e.g. {sorted(missing)[:5]}"
    for asset, seq in ids_by_asset(payloads).items():
        firsts = list(dict.fromkeys(seq))  # first arrival of each id
        assert firsts == sorted(firsts), f"{what}: order broken for {asset}"
    dups = len(got) - len(set(got))
    print(f"{what}: {len(set(got))} delivered, {dups} duplicates")
    return dups


async def wait_until(cond: object, timeout: float = WAIT_S) -> None:
    assert callable(cond)
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.05)


# -- the tests -------------------------------------------------------------------------------
async def test_outage_30s_every_recommendation_arrives_in_order(
    topic_root: str, tmp_path: Path
) -> None:
    # Not under tmp_path (0700): mosquitto started as root saves as its own user.
    keep = Path(tempfile.mkdtemp(prefix="edge-mosq-keep-"))
    keep.chmod(0o777)
    broker = Broker(extra_conf=f"persistence true\npersistence_location {keep}/\n")
    broker.start()
    obs = Observer(broker, f"{topic_root}/gw/recommendations/#")
    try:
        proc = await spawn(broker, tmp_path, topic_root, count=600, rate=15)
        await asyncio.sleep(3)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(30)  # the driver keeps producing into its outbox
        await asyncio.to_thread(broker.start)
        produced = await produced_until_killed(proc, 120)
        assert len(produced) == 600
        await wait_until(lambda: len(set(obs.payloads())) >= 600, 60)
        check_delivery(obs.payloads(), set(produced), "outage")
    finally:
        obs.close()
        broker.close()
        shutil.rmtree(keep, ignore_errors=True)


async def test_sigkill_five_times_loses_nothing(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    total = 10_000
    obs = Observer(broker, f"{topic_root}/gw/recommendations/#")
    rng = random.Random(5)
    produced: list[int] = []
    try:
        for _ in range(5):
            start = produced[-1] + 1 if produced else 0
            proc = await spawn(broker, tmp_path, topic_root, start=start, count=total, rate=1500)
            # Killed 0.2-1 s into producing: a slow start-up (a loaded machine) cannot make
            # the kill come before the first message.
            got = await produced_until_killed(proc, rng.uniform(0.2, 1.0), from_first=True)
            assert got, "killed before producing anything"
            assert got[-1] < total - 1, "finished before the kill: lower the rate"
            produced += got
        start = produced[-1] + 1 if produced else 0
        proc = await spawn(broker, tmp_path, topic_root, start=start, count=total)
        produced += await produced_until_killed(proc, 120)
        assert produced[-1] == total - 1
        await wait_until(lambda: len(set(obs.payloads())) >= total, 60)
        check_delivery(obs.payloads(), set(produced), "sigkill x5")
    finally:
        obs.close()


async def test_status_will_after_kill_online_after_start_offline_after_stop(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    topic = status_topic(agent_settings(broker.port, topic_root), "gw")
    obs = Observer(broker, topic)
    try:
        proc = await spawn(broker, tmp_path, topic_root)
        await wait_until(lambda: obs.payloads()[-1:] == [b"online"])
        proc.kill()
        await proc.wait()
        await wait_until(lambda: obs.payloads()[-1:] == [b"offline"])  # the Will
        proc = await spawn(broker, tmp_path, topic_root)
        await wait_until(lambda: obs.payloads()[-1:] == [b"online"])
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT_S) == 0
        await wait_until(lambda: obs.payloads()[-1:] == [b"offline"])
        assert obs.payloads() == [b"online", b"offline", b"online", b"offline"]
        assert all(m.retain is False for m in obs.messages)  # live deliveries
    finally:
        obs.close()
    late = Observer(broker, topic)  # a subscriber arriving later gets the retained state
    try:
        await wait_until(lambda: late.payloads() == [b"offline"])
        assert late.messages[0].retain
    finally:
        late.close()


async def test_mqtt5_user_property_carries_the_message_id(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    obs = Observer(broker, f"{topic_root}/gw/recommendations/#")
    try:
        proc = await spawn(broker, tmp_path, topic_root, count=3)
        await produced_until_killed(proc, WAIT_S)
        await wait_until(lambda: len(obs.payloads()) >= 3)
        props = [dict(m.properties.UserProperty) for m in obs.messages]  # type: ignore[union-attr]
        assert [p["msg_id"] for p in props] == ["0000000", "0000001", "0000002"]
    finally:
        obs.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
