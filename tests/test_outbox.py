"""The outbox through open_outbox: order, drop policy, delivery over a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import MqttSettings
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.outbox.memory import MemoryQueue
from edge_agent.daemon.outbox.queue import open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.simulator.broker import Broker
from tests.test_mqtt import WAIT_S, Collector, connected, mqtt_settings, sample


def out(topic: str, n: int, priority: Priority = Priority.RECOMMENDATION) -> Outgoing:
    return Outgoing(topic, str(n).encode(), new_id(), key=f"a{n % 3}", priority=priority)


def test_memory_queue_drops_lowest_class_then_oldest() -> None:
    q = MemoryQueue(4)
    label = {"priority": "digest"}
    before = sample("edge_outbox_dropped_total", label)
    rec = [out("r", i) for i in range(3)]
    dig = [out("d", i, Priority.DIGEST) for i in range(3)]
    q.push([dig[0], rec[0], dig[1], rec[1], dig[2]])  # 5 > 4: the oldest digest goes
    assert [m.payload for m in q.head(10) if m.topic == "d"] == [b"1", b"2"]
    q.push([rec[2]])  # digests go before any recommendation
    assert q.head(10) == [rec[0], rec[1], rec[2], dig[2]]
    assert sample("edge_outbox_dropped_total", label) - before == 2
    q.remove([rec[0], rec[1]])
    assert q.head(10) == [rec[2], dig[2]]
    assert len(q) == 2


async def test_delivers_in_priority_then_time_order(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    msgs = [out(f"{topic_root}/d", i, Priority.DIGEST) for i in range(5)]
    msgs += [out(f"{topic_root}/r", i) for i in range(5)]
    await outbox.put(msgs)
    assert outbox.depth() == 10
    seen = Collector()
    published = sample("edge_published_total")
    async with (
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttClient(mqtt_settings(broker, max_inflight=3), client_id="up", name="up") as up,
    ):
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        task = asyncio.create_task(outbox.deliver(MqttSink(up)))
        await seen.wait_for(lambda: len(seen.seen) >= 10)
        async with asyncio.timeout(WAIT_S):
            while outbox.depth():
                await asyncio.sleep(0.02)
        task.cancel()
        assert sample("edge_outbox_messages") == 0  # deliveries settled by the window count too
    await outbox.close()
    assert [t.rsplit("/", 1)[1] + p.decode() for t, p in seen.seen] == [
        *(f"r{i}" for i in range(5)),
        *(f"d{i}" for i in range(5)),
    ]
    assert sample("edge_published_total") - published == 10


async def test_deliver_waits_while_uplink_is_down(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    await asyncio.to_thread(broker.stop)
    settings: MqttSettings = mqtt_settings(broker)
    async with MqttClient(settings, client_id="up", name="up") as up:
        task = asyncio.create_task(outbox.deliver(MqttSink(up)))
        await outbox.put([out(f"{topic_root}/r", 1)])
        await asyncio.sleep(0.5)
        assert outbox.depth() == 1  # nothing removed without an ack
        await asyncio.to_thread(broker.start)
        await connected(up)
        async with asyncio.timeout(WAIT_S):
            while outbox.depth():
                await asyncio.sleep(0.02)
        task.cancel()
    await outbox.close()
