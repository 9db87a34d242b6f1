"""Sparkplug B ingest against a real mosquitto and an independent edge node (tests/sparkplug_node).

Births teach metrics and aliases, data is read through them, a death makes the signals BAD
at once, and whatever cannot be read asks for a rebirth (once) or goes to the dead letters.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from edge_agent.connectors.settings import MqttSettings, SparkplugSettings
from edge_agent.connectors.sparkplug import SparkplugSource, open_sparkplug_source
from edge_agent.connectors.sparkplug_session import Sessions
from edge_agent.core import logs, metrics
from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.flow.frames import FrameBuilder
from edge_agent.daemon.flow.settings import FrameSettings
from edge_agent.simulator.broker import Broker
from tests.agent_proc import Listener
from tests.sparkplug_node import (
    BOOLEAN,
    DOUBLE,
    FLOAT,
    INT32,
    INT64,
    STRING,
    UINT32,
    EdgeNode,
    Payload,
    set_value,
)


@pytest.fixture(autouse=True)
def _logs_to_a_live_stream() -> None:
    """Log into a stream of this test's own: an earlier test may have closed the one it set."""
    logs.configure("debug", "json", io.StringIO())


WAIT_S = 10.0
T0 = 1_750_000_000_000  # ms
PUMP = [
    ("temperature", 1, DOUBLE),
    ("vibration", 2, FLOAT),
    ("current", 3, INT32),
    ("running", 4, BOOLEAN),
    ("mode", 5, STRING),
    ("pressure", 6, UINT32),
]
VALUES = {
    "temperature": 61.5,
    "vibration": 2.25,
    "current": -5,
    "running": True,
    "mode": "auto",
    "pressure": 4,
}


def sample(name: str, labels: dict[str, str]) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def events(event: str) -> float:
    return sample("edge_sparkplug_events_total", {"event": event})


class Collector:
    """Takes the source's batches in a task; `wait_for` waits until a condition holds."""

    def __init__(self, source: SparkplugSource) -> None:
        self.readings: list[Reading] = []
        self._task = asyncio.create_task(self._run(source.batches()))

    async def _run(self, batches: AsyncIterator[list[Reading]]) -> None:
        async for batch in batches:
            self.readings += batch

    async def wait_for(self, ok: Callable[[list[Reading]], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while not ok(self.readings):
                await asyncio.sleep(0.02)

    async def settle(self, seconds: float = 0.5) -> None:
        await asyncio.sleep(seconds)

    def close(self) -> None:
        self._task.cancel()


@asynccontextmanager
async def sparkplug(
    broker: Broker, group: str, **kw: object
) -> AsyncIterator[tuple[SparkplugSource, Collector]]:
    mqtt = MqttSettings(host=broker.host, port=broker.port, reconnect_min_s=0.05)
    settings = SparkplugSettings.model_validate({"groups": [group], "qos": 1} | kw)
    async with open_sparkplug_source(mqtt, settings, "gw") as source:
        await asyncio.wait_for(source.wait_ready(), WAIT_S)
        collector = Collector(source)
        try:
            yield source, collector
        finally:
            collector.close()


async def born(node: EdgeNode, device: str = "pump-1") -> None:
    await asyncio.to_thread(node.nbirth, T0)
    await asyncio.to_thread(node.dbirth, device, PUMP, VALUES, T0)


def of(readings: list[Reading], asset: str) -> list[Reading]:
    return [r for r in readings if r.asset == asset]


async def test_births_teach_the_metrics_and_data_by_alias_becomes_readings(
    broker: Broker, topic_root: str
) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    try:
        async with sparkplug(broker, topic_root) as (source, got):
            await born(node)
            await got.wait_for(lambda rs: len(rs) >= 5)
            birth = {r.signal: r.value for r in got.readings}
            # The string metric is no reading; the signed Int32 comes back negative.
            assert birth == {
                "temperature": 61.5,
                "vibration": 2.25,
                "current": -5.0,
                "running": 1.0,
                "pressure": 4.0,
            }
            assert {r.ts for r in got.readings} == {T0 / 1000}
            values = {"temperature": 62.0, "vibration": 2.5, "current": 7, "running": False}
            await asyncio.to_thread(node.ddata, "pump-1", values, T0 + 1000)
            await got.wait_for(lambda rs: len(rs) >= 9)
            data = {r.signal: (r.ts, r.value, r.quality) for r in got.readings[5:]}
            assert data == {
                "temperature": (T0 / 1000 + 1, 62.0, Quality.GOOD),
                "vibration": (T0 / 1000 + 1, 2.5, Quality.GOOD),
                "current": (T0 / 1000 + 1, 7.0, Quality.GOOD),
                "running": (T0 / 1000 + 1, 0.0, Quality.GOOD),
            }
            assert {r.asset for r in got.readings} == {"pump-1"}
            assert source.sessions.events.get("unknown_alias", 0) == 0
            assert node.rebirths(wait_s=0.3) == []
    finally:
        node.close()


async def test_data_before_any_birth_asks_for_one_rebirth_and_reads_nothing(
    broker: Broker, topic_root: str
) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    node.metrics["pump-1"] = PUMP  # the node thinks it was born: the agent never saw it
    unborn = events("unborn")
    try:
        async with sparkplug(broker, topic_root) as (_source, got):
            for i in range(5):
                await asyncio.to_thread(node.ddata, "pump-1", VALUES, T0 + i * 1000)
            asked = await asyncio.to_thread(node.rebirths, 1.0)
            assert len(asked) == 1, asked  # once: the next ones fall inside the interval
            assert asked[0].timestamp > 0
            assert events("unborn") - unborn == 5
            # The node answers with its births: from then on its data is read.
            await born(node)
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 70.0}, T0 + 9000)
            await got.wait_for(lambda rs: any(r.value == 70.0 for r in rs))
            assert all(r.ts >= T0 / 1000 for r in got.readings)
    finally:
        node.close()


async def test_a_seq_gap_asks_for_a_rebirth(broker: Broker, topic_root: str) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    gaps = events("seq_gap")
    try:
        async with sparkplug(broker, topic_root) as (_source, got):
            await born(node)
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 63.0}, T0 + 1000)
            assert await asyncio.to_thread(node.rebirths, 0.3) == []
            node.seq += 3  # three messages lost on the way
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 64.0}, T0 + 2000)
            asked = await asyncio.to_thread(node.rebirths, 1.0)
            assert len(asked) == 1
            assert events("seq_gap") - gaps == 1
            # The message after the gap is still read: its aliases are known.
            await got.wait_for(lambda rs: any(r.value == 64.0 for r in rs))
    finally:
        node.close()


async def test_a_device_death_makes_its_signals_bad_at_once(
    broker: Broker, topic_root: str
) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    try:
        async with sparkplug(broker, topic_root) as (_source, got):
            await born(node, "pump-1")
            await asyncio.to_thread(node.dbirth, "pump-2", PUMP, VALUES, T0)
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 65.0}, T0 + 3000)
            await got.wait_for(lambda rs: any(r.value == 65.0 for r in rs))
            before = len(got.readings)
            await asyncio.to_thread(node.ddeath, "pump-1", T0 + 60_000)
            await got.wait_for(lambda rs: len(rs) >= before + 5)
            dead = got.readings[before:]
            assert {r.signal for r in dead} == {
                "temperature",
                "vibration",
                "current",
                "running",
                "pressure",
            }
            assert {r.asset for r in dead} == {"pump-1"}
            assert all(r.quality is Quality.BAD and math.isnan(r.value) for r in dead)
            # Dated just after the last reading, not at the (later) death message's time.
            assert {r.ts for r in dead} == {T0 / 1000 + 3 + 0.001}
            # pump-2 lives on; pump-1's data is no longer read until it is born again.
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 66.0}, T0 + 4000)
            await asyncio.to_thread(node.ddata, "pump-2", {"temperature": 67.0}, T0 + 4000)
            await got.wait_for(lambda rs: any(r.value == 67.0 for r in rs))
            await got.settle(0.3)
            assert not any(r.value == 66.0 for r in got.readings)
    finally:
        node.close()


async def test_a_new_birth_with_other_aliases_replaces_the_old_ones(
    broker: Broker, topic_root: str
) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    try:
        async with sparkplug(broker, topic_root) as (source, got):
            await born(node)
            swapped = [("temperature", 2, DOUBLE), ("vibration", 1, FLOAT), ("flow", 9, DOUBLE)]
            await asyncio.to_thread(node.dbirth, "pump-1", swapped, {"flow": 80.0}, T0 + 1000)
            values = {"temperature": 71.0, "vibration": 3.5, "flow": 81.0}
            await asyncio.to_thread(node.ddata, "pump-1", values, T0 + 2000)
            await got.wait_for(lambda rs: any(r.value == 81.0 for r in rs))
            last = {r.signal: r.value for r in got.readings if r.ts == T0 / 1000 + 2}
            assert last == values
            assert source.sessions.events.get("unknown_alias", 0) == 0
            assert await asyncio.to_thread(node.rebirths, 0.2) == []
    finally:
        node.close()


async def test_a_malformed_payload_is_dead_lettered_and_counted_and_reading_goes_on(
    broker: Broker, topic_root: str
) -> None:
    node = EdgeNode(broker, topic_root, "line-1")
    dead = Listener(broker, f"{topic_root}-dl/#")
    rejected = sample("edge_messages_rejected_total", {"reason": "not_protobuf"})
    garbage = b"\x0a\xff\xff\xff\xff\xff\xff"  # field 1 as a length past the end
    try:
        async with sparkplug(
            broker, topic_root, deadletter_topic=f"{topic_root}-dl/{{gateway}}"
        ) as (_source, got):
            await born(node)
            topic = node.topic("DDATA", "pump-1")
            await asyncio.to_thread(node.send, topic, garbage)
            await asyncio.to_thread(node.ddata, "pump-1", {"temperature": 72.0}, T0 + 1000)
            await got.wait_for(lambda rs: any(r.value == 72.0 for r in rs))
            await got.settle(0.3)
            letters = dead.drain()
            assert letters == [(f"{topic_root}-dl/gw/not_protobuf/{topic}", garbage)]
            assert sample("edge_messages_rejected_total", {"reason": "not_protobuf"}) == (
                rejected + 1
            )
    finally:
        dead.close()
        node.close()


async def test_as_primary_host_the_agent_keeps_a_retained_state(
    broker: Broker, topic_root: str
) -> None:
    host = f"{topic_root}-host"
    topic = f"spBv1.0/STATE/{host}"
    async with sparkplug(broker, topic_root, host_id=host):
        late = Listener(broker, topic)
        try:
            await asyncio.sleep(0.3)
            (got_topic, body), *_ = late.drain()
            state = json.loads(body)
            assert got_topic == topic
            assert state["online"] is True
            assert abs(state["timestamp"] - time.time() * 1000) < 60_000
            # A stale offline (an earlier session's Will) is answered with online again.
            late.publish(topic, json.dumps({"online": False, "timestamp": 1}).encode())
            await asyncio.sleep(0.5)
            seen = [json.loads(p)["online"] for _, p in late.drain()]
            assert seen[-1] is True, seen
        finally:
            late.close()
    after = Listener(broker, topic)
    try:
        await asyncio.sleep(0.3)
        (_t, body), *_ = after.drain()
        assert json.loads(body)["online"] is False  # the clean stop publishes the death
        assert json.loads(body)["timestamp"] == state["timestamp"]
    finally:
        after.close()


# -- a death ends what the frames hold --------------------------------------------------------


def _windows_through_a_short_outage(*, death: bool) -> list[float]:
    """A device reporting at 1 Hz, gone for 5 s at t=60 (with or without DDEATH), back after."""
    names = ("temperature", "vibration", "current", "pressure", "flow")
    frames = FrameBuilder(names, 1.0, 30, 5, FrameSettings())
    sessions = Sessions(SparkplugSettings(), lambda _g, _n: None)
    seq = iter(range(1, 10_000))
    topic = "spBv1.0/g/{}/n".format
    start = T0

    def feed(kind: str, ts_ms: int, values: dict[str, float] | None = None) -> None:
        body = Payload(timestamp=ts_ms, seq=next(seq) % 256)
        for alias, (name, value) in enumerate((values or {}).items(), start=1):
            m = body.metrics.add(alias=alias, timestamp=ts_ms)
            if kind == "DBIRTH":
                m.name = name
            set_value(m, DOUBLE, value)
        frames.ingest(sessions.handle(topic(kind) + "/pump-1", body.SerializeToString(), 0.0))

    nbirth = Payload(timestamp=start, seq=0)
    set_value(nbirth.metrics.add(name="bdSeq"), INT64, 0)
    sessions.handle(topic("NBIRTH"), nbirth.SerializeToString(), 0.0)
    sample = dict(zip(names, (60.0, 2.0, 40.0, 4.0, 80.0), strict=True))
    feed("DBIRTH", start, sample)
    for t in range(1, 61):
        feed("DDATA", start + t * 1000, sample)
    if death:
        feed("DDEATH", start + 61_000)
    feed("DBIRTH", start + 65_000, sample)
    for t in range(66, 121):
        feed("DDATA", start + t * 1000, sample)
    return [w.ts - start / 1000 for w in frames.take()]


def test_after_a_device_death_no_window_holds_its_last_values() -> None:
    held = _windows_through_a_short_outage(death=False)
    dead = _windows_through_a_short_outage(death=True)
    # Without the death, the 4 s of silence are filled with held values (under
    # stale_after_s), and windows across them are cut and would be scored.
    assert any(end - 29 < 62 and end > 64 for end in held), held
    # With it, every window lies wholly before the death or wholly after the rebirth.
    assert dead, "the device is read before and after"
    assert all(end <= 60 or end - 29 >= 65 for end in dead), dead


def test_a_node_death_ends_every_device_unless_it_is_an_older_sessions_will() -> None:
    sessions = Sessions(SparkplugSettings(), lambda _g, _n: None)

    def send(
        kind: str, device: str = "", bd_seq: int | None = None, **values: float
    ) -> list[Reading]:
        p = Payload(timestamp=T0, seq=0)
        if bd_seq is not None:
            set_value(p.metrics.add(name="bdSeq"), INT64, bd_seq)
        for name, value in values.items():
            set_value(p.metrics.add(name=name, alias=len(p.metrics)), DOUBLE, value)
        topic = f"spBv1.0/g/{kind}/n" + (f"/{device}" if device else "")
        return sessions.handle(topic, p.SerializeToString(), 0.0)

    send("NBIRTH", bd_seq=7)
    send("DBIRTH", "a", temperature=1.0)
    send("DBIRTH", "b", flow=2.0)
    assert send("NDEATH", bd_seq=6) == []  # the Will of session 6, delivered late
    assert sessions.events["stale_death"] == 1
    dead = send("NDEATH", bd_seq=7)
    assert {(r.asset, r.signal) for r in dead} == {("a", "temperature"), ("b", "flow")}
    assert all(r.quality is Quality.BAD for r in dead)
    assert sessions.learned == 0  # everything the births taught is forgotten


def test_a_birth_past_max_metrics_is_refused_without_a_rebirth_loop() -> None:
    asked: list[tuple[str, str]] = []
    sessions = Sessions(SparkplugSettings(max_metrics=10), lambda g, n: asked.append((g, n)))

    def send(
        kind: str, device: str, seq: int, names: int, alias_only: bool = False
    ) -> list[Reading]:
        p = Payload(timestamp=T0, seq=seq)
        for i in range(names):
            m = p.metrics.add(alias=i, timestamp=T0)
            if not alias_only:
                m.name = f"m{i}"
            set_value(m, DOUBLE, float(i))
        return sessions.handle(f"spBv1.0/g/{kind}/n/{device}", p.SerializeToString(), 0.0)

    nbirth = Payload(timestamp=T0, seq=0)
    sessions.handle("spBv1.0/g/NBIRTH/n", nbirth.SerializeToString(), 0.0)
    assert len(send("DBIRTH", "small", 1, 3)) == 3
    assert send("DBIRTH", "big", 2, 20) == []  # 20 metrics do not fit in 10
    assert send("DDATA", "big", 3, 20, alias_only=True) == []
    assert len(send("DDATA", "small", 4, 3, alias_only=True)) == 3
    assert sessions.events["birth_refused"] == 1
    assert asked == []  # a refused device is not asked again and again
