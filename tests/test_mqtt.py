"""MqttClient, MqttSource and MqttSink against a real mosquitto."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.mqtt_source import MqttSource
from edge_agent.connectors.settings import IngestSettings, MqttSettings
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core import metrics
from edge_agent.core.errors import ConnectorError
from edge_agent.core.readings import Outgoing, Reading, new_id
from edge_agent.simulator.broker import Broker

WAIT_S = 10.0


def mqtt_settings(broker: Broker, **kw: object) -> MqttSettings:
    base: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    return MqttSettings.model_validate(base | kw)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def connected(client: MqttClient) -> MqttClient:
    await asyncio.wait_for(client.connected.wait(), WAIT_S)
    return client


def msg(topic: str, payload: object, qos: int = 1) -> Outgoing:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Outgoing(topic, body, new_id(), qos=qos)


async def until(ok: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not ok():
            await asyncio.sleep(0.01)


async def take(batches: AsyncIterator[list[Reading]], n: int) -> list[Reading]:
    out: list[Reading] = []
    async with asyncio.timeout(WAIT_S):
        while len(out) < n:
            out += await anext(batches)
    return out


@asynccontextmanager
async def wired(
    broker: Broker,
    ingest: IngestSettings,
    *,
    in_name: str = "in",
    out_settings: MqttSettings | None = None,
) -> AsyncIterator[tuple[MqttClient, MqttClient, MqttSource]]:
    """An ingest client with its source and a publishing client, both connected, subscribed."""
    async with (
        MqttClient(mqtt_settings(broker), client_id="in", name=in_name) as cin,
        MqttClient(out_settings or mqtt_settings(broker), client_id="out", name="out") as cout,
        MqttSource(cin, ingest, "gw") as source,
    ):
        await connected(cin)
        await connected(cout)
        await cin.wait_subscribed()
        yield cin, cout, source


class Collector:
    """Messages seen by a plain subscriber, in arrival order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    def __call__(self, topic: str, payload: bytes) -> None:
        self.seen.append((topic, payload))
        self.changed.set()

    async def wait_for(self, ok: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not ok():
                self.changed.clear()
                await self.changed.wait()


async def test_round_trip_single_and_batch(broker: Broker, topic_root: str) -> None:
    ingest = IngestSettings(topics=[f"{topic_root}/{{asset}}/telemetry"])
    before = sample("edge_readings_total", {"connector": "mqtt"})
    async with wired(broker, ingest) as (_, cout, source):
        sink = MqttSink(cout)
        await sink.publish(msg(f"{topic_root}/p1/telemetry", {"ts": 1, "temp": 20.5}))
        batch = [{"ts": 2, "temp": 21}, {"ts": 3, "temp": 22, "vib": 0.5}]
        await sink.publish(msg(f"{topic_root}/p2/telemetry", {"readings": batch}))
        got = await take(source.batches(), 4)
    assert got == [
        Reading("p1", "temp", 1.0, 20.5),
        Reading("p2", "temp", 2.0, 21.0),
        Reading("p2", "temp", 3.0, 22.0),
        Reading("p2", "vib", 3.0, 0.5),
    ]
    assert sample("edge_readings_total", {"connector": "mqtt"}) - before == 4


async def test_signal_topics_and_ms_timestamps(broker: Broker, topic_root: str) -> None:
    ingest = IngestSettings(topics=[f"{topic_root}/{{asset}}/{{signal}}"], ts_unit="ms")
    out_settings = mqtt_settings(broker, protocol="3.1.1")
    async with wired(broker, ingest, out_settings=out_settings) as (_, cout, source):
        await cout.publish(msg(f"{topic_root}/m1/current", {"ts": 1500, "value": 3}))
        await cout.publish(msg(f"{topic_root}/m1/flow", [{"ts": 2000, "value": 7.5}]))
        got = await take(source.batches(), 2)
    assert got == [Reading("m1", "current", 1.5, 3.0), Reading("m1", "flow", 2.0, 7.5)]


async def test_every_rejection_goes_to_deadletter_unchanged(
    broker: Broker, topic_root: str
) -> None:
    ingest = IngestSettings(
        topics=[f"{topic_root}/{{asset}}/telemetry", f"{topic_root}/+/#"],
        max_payload_bytes=100,
        deadletter_topic=f"{topic_root}/dl/{{gateway}}",
    )
    # The second pattern has no {asset}: it is refused; subscribe to the extra level instead.
    with pytest.raises(Exception, match="EDGE_INGEST__TOPICS"):
        MqttSource(MqttClient(mqtt_settings(broker), client_id="x", name="x"), ingest, "gw")
    ingest = ingest.model_copy(update={"topics": [f"{topic_root}/{{asset}}/telemetry"]})
    t = f"{topic_root}/p1/telemetry"
    bad = {
        "too_large": (t, b'{"ts": 1, "a": "' + b"x" * 120 + b'"}'),
        "not_json": (t, b"\x00garbage{"),
        "bad_type": (t, b'{"ts": "now", "a": 1}'),
        "not_finite": (t, b'{"ts": 1, "a": NaN}'),
        "no_timestamp": (t, b'{"a": 1}'),
        "empty": (t, b"[]"),
    }
    before = {r: sample("edge_messages_rejected_total", {"reason": r}) for r in bad}
    dead = Collector()
    async with (
        MqttClient(mqtt_settings(broker), client_id="in", name="in") as cin,
        MqttClient(mqtt_settings(broker), client_id="out", name="out") as cout,
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttSource(cin, ingest, "gw7") as source,
    ):
        watch.subscribe(f"{topic_root}/dl/#", 1, dead)
        for c in (cin, cout, watch):
            await connected(c)
        await asyncio.gather(cin.wait_subscribed(), watch.wait_subscribed())
        for i, (topic, payload) in enumerate(bad.values()):
            await cout.publish(msg(topic, payload))
            await cout.publish(msg(t, {"ts": i, "good": i}))  # good ones keep flowing
        got = await take(source.batches(), len(bad))
        await dead.wait_for(lambda: len(dead.seen) >= len(bad))
    assert [r.value for r in got] == [float(i) for i in range(len(bad))]
    # Unchanged but for the byte bound: a dead letter carries max_payload_bytes at most.
    expected = {(f"{topic_root}/dl/gw7/{r}/{topic}", p[:100]) for r, (topic, p) in bad.items()}
    assert set(dead.seen) == expected
    for reason in bad:
        assert sample("edge_messages_rejected_total", {"reason": reason}) - before[reason] == 1


async def test_no_match_reaches_deadletter(broker: Broker, topic_root: str) -> None:
    # A wildcard subscription can deliver topics the pattern does not name an asset in.
    ingest = IngestSettings(
        topics=[f"{topic_root}/{{asset}}/telemetry"], deadletter_topic=f"{topic_root}/dl"
    )
    dead = Collector()
    async with (
        MqttClient(mqtt_settings(broker), client_id="in", name="in") as cin,
        MqttSource(cin, ingest, "gw") as source,
    ):
        cin.subscribe(f"{topic_root}/odd/#", 0, source._on_message)
        cin.subscribe(f"{topic_root}/dl/#", 0, dead)
        await connected(cin)
        await cin.wait_subscribed()
        await cin.publish(msg(f"{topic_root}/odd/a/b", b'{"ts": 1, "a": 1}'))
        await dead.wait_for(lambda: len(dead.seen) >= 1)
    assert dead.seen == [(f"{topic_root}/dl/no_match/{topic_root}/odd/a/b", b'{"ts": 1, "a": 1}')]


async def test_reconnects_and_resubscribes_after_broker_restart(
    broker: Broker, topic_root: str
) -> None:
    ingest = IngestSettings(topics=[f"{topic_root}/{{asset}}/telemetry"])
    before = sample("edge_reconnects_total", {"connector": "sensors"})
    async with wired(broker, ingest, in_name="sensors") as (cin, cout, source):
        batches = source.batches()
        await cout.publish(msg(f"{topic_root}/p1/telemetry", {"ts": 1, "a": 1}))
        assert (await take(batches, 1))[0].value == 1.0
        await asyncio.to_thread(broker.stop)
        await until(lambda: not cin.connected.is_set())
        await asyncio.to_thread(broker.start)
        await connected(cin)
        await connected(cout)
        await cin.wait_subscribed()
        await cout.publish(msg(f"{topic_root}/p1/telemetry", {"ts": 2, "a": 2}))
        assert (await take(batches, 1))[0].value == 2.0
    assert sample("edge_reconnects_total", {"connector": "sensors"}) - before >= 1


async def test_publish_waiting_for_ack_survives_a_restart(broker: Broker, topic_root: str) -> None:
    async with MqttClient(mqtt_settings(broker), client_id="out", name="out") as cout:
        await connected(cout)
        await asyncio.to_thread(broker.stop)
        await until(lambda: not cout.connected.is_set())
        # Retained, so that a subscriber after the restart sees what the broker stored.
        late = msg(f"{topic_root}/x", b"late")._replace(retain=True)
        pending = asyncio.create_task(cout.publish(late))
        await asyncio.sleep(0.3)
        assert not pending.done()  # no pretend success while the broker is down
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(pending, WAIT_S)
    seen = Collector()
    async with MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch:
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await seen.wait_for(lambda: len(seen.seen) >= 1)
    assert seen.seen == [(f"{topic_root}/x", b"late")]


async def test_publish_pending_at_close_raises(broker: Broker, topic_root: str) -> None:
    client = MqttClient(mqtt_settings(broker), client_id="out", name="out")
    async with client:
        await connected(client)
        await asyncio.to_thread(broker.stop)
        await until(lambda: not client.connected.is_set())
        pending = asyncio.create_task(client.publish(msg(f"{topic_root}/x", b"never")))
        await asyncio.sleep(0.1)
    with pytest.raises(ConnectorError):
        await pending


async def test_full_buffer_drops_newest_and_counts(broker: Broker, topic_root: str) -> None:
    ingest = IngestSettings(topics=[f"{topic_root}/{{asset}}/telemetry"], max_buffered=1000)
    before = sample("edge_readings_dropped_total", {"reason": "buffer_full"})
    rows = [{"ts": i, "a": i} for i in range(300)]
    async with wired(broker, ingest) as (_, cout, source):
        for _ in range(5):  # 1500 readings, nobody consuming
            await cout.publish(msg(f"{topic_root}/p1/telemetry", rows))
        await cout.publish(msg(f"{topic_root}/p1/telemetry", {"ts": -1, "a": -1}))
        await until(
            lambda: sample("edge_readings_dropped_total", {"reason": "buffer_full"}) - before >= 501
        )
        got = await take(source.batches(), 1000)
    assert len(got) == 1000
    assert [r.value for r in got[:300]] == [float(i) for i in range(300)]
    assert got[-1].value == 99.0  # the 4th message was cut after 100 readings
    assert sample("edge_readings_dropped_total", {"reason": "buffer_full"}) - before == 501


async def test_a_failing_handler_is_counted_and_the_connection_lives(
    broker: Broker, topic_root: str
) -> None:
    good = Collector()
    calls: list[str] = []

    def broken(topic: str, _payload: bytes) -> None:
        calls.append(topic)
        raise RuntimeError("a bug in a handler")

    before = sample("edge_mqtt_callback_errors_total", {"client": "cb"})
    async with MqttClient(mqtt_settings(broker), client_id="cb", name="cb") as client:
        client.subscribe(f"{topic_root}/bad", 1, broken)
        client.subscribe(f"{topic_root}/#", 1, good)
        await connected(client)
        await client.wait_subscribed()
        await client.publish(msg(f"{topic_root}/bad", b"1"))
        await client.publish(msg(f"{topic_root}/ok", b"2"))
        await good.wait_for(lambda: (f"{topic_root}/ok", b"2") in good.seen)
        assert client.connected.is_set()
    assert calls
    assert sample("edge_mqtt_callback_errors_total", {"client": "cb"}) - before >= 1


async def test_cancellation_passes_through_the_client(broker: Broker) -> None:
    entered = asyncio.Event()

    async def user() -> None:
        async with MqttClient(mqtt_settings(broker), client_id="c", name="c") as client:
            await connected(client)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(user())
    await asyncio.wait_for(entered.wait(), WAIT_S)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
