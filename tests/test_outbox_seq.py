"""Seqs are never handed out twice: the delivery window keys what it holds by seq, so a seq
given again (SQLite's max(rowid) + 1 once the table emptied) left new rows unsent while the
old ones were being deleted (the soak's digests waited for minutes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.outbox.queue import open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.outbox.store import Store
from edge_agent.simulator.broker import Broker
from tests.test_mqtt import Collector, connected, mqtt_settings


def digest(topic: str, i: int) -> Outgoing:
    return Outgoing(f"{topic}/p{i}", b"d" * 300, new_id(), key=f"p{i}", priority=Priority.DIGEST)


def test_an_emptied_table_does_not_hand_out_its_seqs_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "outbox.db", 1 << 20, "normal")
    store.open()
    store.insert([digest("t", i) for i in range(3)], frozenset())
    assert store.inserted == range(1, 4)
    store.delete([1, 2, 3])
    assert store.count == 0
    store.insert([digest("t", i) for i in range(2)], frozenset())
    assert store.inserted == range(4, 6)  # SQLite alone would give 1 and 2 again
    assert store.insert_now([digest("t", 9)], [4, 5]) == range(6, 7)
    store.delete([6])
    assert store.insert_now([digest("t", 9)], []) == range(7, 8)
    store.close()
    reopened = Store(tmp_path / "outbox.db", 1 << 20, "normal")
    reopened.open()  # a new process: after the largest seq the file holds
    reopened.insert([digest("t", 1)], frozenset())
    assert reopened.inserted == range(8, 9)
    reopened.close()


async def test_batches_put_as_the_last_ones_are_deleted_are_all_delivered(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    seen = Collector()
    async with (
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttClient(mqtt_settings(broker), client_id="up", name="up") as up,
    ):
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        await connected(up)
        task = asyncio.create_task(outbox.deliver(MqttSink(up)))
        sent = 0
        for gap in [0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.05] * 3:
            await outbox.put([digest(topic_root, i) for i in range(20)])
            sent += 20
            async with asyncio.timeout(5):
                while len(seen.seen) < sent:
                    await asyncio.sleep(0.002)
            await asyncio.sleep(gap)  # around the window's 20 ms before it deletes acked rows
        async with asyncio.timeout(5):
            while outbox.depth():
                await asyncio.sleep(0.01)
        task.cancel()
    await outbox.close()
    assert len(seen.seen) == sent
