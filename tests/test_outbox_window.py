"""The delivery window: many put()s racing delivery lose nothing and keep order per class.

Real parts: the SQLite outbox, a real mosquitto, the uplink client. Producers put from
several tasks at once, some one message at a time (which the window takes straight from
put()), some in batches larger than the window holds (which it must read from the file),
and mix in a lower class, so reads, offers and refusals interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.outbox import window as window_module
from edge_agent.daemon.outbox.queue import Outbox, open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.simulator.broker import Broker
from tests.test_mqtt import Collector, connected, mqtt_settings

PER_PRODUCER = 600
WINDOW = 8  # small, so that the queue beside it fills and reads take over


def _msg(root: str, asset: str, n: int, priority: Priority) -> Outgoing:
    body = json.dumps({"asset": asset, "n": n}).encode()
    return Outgoing(f"{root}/{asset}", body, new_id(), key=asset, priority=priority)


@contextlib.asynccontextmanager
async def _delivering(
    broker: Broker, root: str, outbox: Outbox, seen: Collector
) -> AsyncIterator[None]:
    """A watcher recording everything under `root`, and `outbox` delivering through a
    window of WINDOW meanwhile (cancelled on the way out)."""
    async with (
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttClient(mqtt_settings(broker, max_inflight=WINDOW), client_id="up", name="up") as up,
    ):
        watch.subscribe(f"{root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        await connected(up)
        delivery = asyncio.create_task(outbox.deliver(MqttSink(up)))
        try:
            yield
        finally:
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)


async def _produce(outbox: object, root: str, asset: str, batch: int, cls: Priority) -> None:
    put = outbox.put  # type: ignore[attr-defined]
    n = 0
    while n < PER_PRODUCER:
        await put([_msg(root, asset, i, cls) for i in range(n, min(n + batch, PER_PRODUCER))])
        n += batch
        if n % 50 < batch:
            await asyncio.sleep(0)  # let delivery read while others put


async def test_racing_puts_arrive_complete_and_in_order(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    seen = Collector()
    producers = {
        "single-a": (1, Priority.RECOMMENDATION),
        "single-b": (1, Priority.RECOMMENDATION),
        "bulk": (3 * WINDOW * 4 + 1, Priority.RECOMMENDATION),  # more than the queue holds
        "digest": (7, Priority.DIGEST),
    }
    async with _delivering(broker, topic_root, outbox, seen):
        await asyncio.gather(
            *(_produce(outbox, topic_root, a, b, c) for a, (b, c) in producers.items())
        )
        total = PER_PRODUCER * len(producers)
        async with asyncio.timeout(60):
            await seen.wait_for(lambda: len({p for _, p in seen.seen}) >= total)
            while outbox.depth():
                await asyncio.sleep(0.02)
    await outbox.close()
    firsts: dict[str, list[int]] = {}
    for _, payload in seen.seen:
        doc = json.loads(payload)
        got = firsts.setdefault(doc["asset"], [])
        if doc["n"] not in got:
            got.append(doc["n"])
    for asset in producers:
        assert firsts[asset] == list(range(PER_PRODUCER)), f"{asset}: lost or out of order"


async def test_publishes_keep_their_call_order_across_a_wait_for_the_connection(
    broker: Broker, topic_root: str
) -> None:
    """A publish called after others that wait for the connection goes out after them."""
    seen = Collector()
    async with MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch:
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        up = MqttClient(mqtt_settings(broker), client_id="up", name="up")  # not connecting yet
        first = [
            asyncio.create_task(up.publish(_msg(topic_root, "a", n, Priority.RECOMMENDATION)))
            for n in range(3)
        ]
        await asyncio.sleep(0.1)  # all three wait for the connection now

        async def as_soon_as_connected() -> None:
            await up.connected.wait()  # may wake before the three above do
            await up.publish(_msg(topic_root, "a", 3, Priority.RECOMMENDATION))

        last = asyncio.create_task(as_soon_as_connected())
        await asyncio.sleep(0.1)
        async with up:
            await asyncio.gather(*first, last)
            await seen.wait_for(lambda: len(seen.seen) >= 4)
    assert [json.loads(p)["n"] for _, p in seen.seen] == [0, 1, 2, 3]


async def test_a_message_held_for_the_acks_in_flight_goes_once_the_last_is_in(
    broker: Broker, topic_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone message waits for the acks of a burst in flight, and no longer.

    The window settled finished publishes after it had tried to launch: the message, held
    while they were in flight, then waited for the next wake-up, which was the timer that
    deletes acked rows (_DELETE_AFTER_S). Here that timer is a minute, and the message
    must arrive long before it.
    """
    monkeypatch.setattr(window_module, "_DELETE_AFTER_S", 60.0)
    outbox = open_outbox(OutboxSettings(), tmp_path)
    seen = Collector()
    async with _delivering(broker, topic_root, outbox, seen):
        await outbox.put([_msg(topic_root, "warm-up", 0, Priority.RECOMMENDATION)])
        await seen.wait_for(lambda: len(seen.seen) == 1)  # the window runs, caught up
        burst = [_msg(topic_root, "digest", n, Priority.DIGEST) for n in range(WINDOW - 2)]
        # In one turn of the loop: the burst goes out at once, the recommendation is held
        # behind it (more than half the window in flight, one message queued).
        await asyncio.gather(
            outbox.put(burst), outbox.put([_msg(topic_root, "rec", 0, Priority.RECOMMENDATION)])
        )
        async with asyncio.timeout(5):
            await seen.wait_for(lambda: any(b'"rec"' in p for _, p in seen.seen))
    await outbox.close()
    assert len(seen.seen) == WINDOW  # the warm-up, the burst, the recommendation
