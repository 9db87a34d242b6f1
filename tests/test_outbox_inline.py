"""Commits made on the event loop (put() while the worker thread is idle) keep the promises.

Real parts: the SQLite outbox, a real mosquitto, the uplink client, a real SIGKILL. Each
test also checks that most commits did run on the loop, or it would prove nothing new.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.outbox.queue import SqliteOutbox, open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.outbox.store import PAGE_SIZE
from edge_agent.simulator.broker import Broker
from tests.test_mqtt import Collector, connected, mqtt_settings

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from edge_agent.connectors.mqtt import MqttClient
    from edge_agent.connectors.settings import MqttSettings
    from edge_agent.connectors.uplink import MqttSink
    from edge_agent.core.readings import Outgoing, new_id
    from edge_agent.daemon.outbox.queue import open_outbox
    from edge_agent.daemon.outbox.settings import OutboxSettings

    async def main(state: str, port: int, root: str) -> None:
        outbox = open_outbox(OutboxSettings(), Path(state))
        mqtt = MqttSettings(port=port, protocol="5")
        async with MqttClient(mqtt, client_id="up-killed", name="uplink") as up:
            await up.connected.wait()
            asyncio.create_task(outbox.deliver(MqttSink(up)))
            for n in range(1_000_000):
                body = json.dumps({"n": n}).encode()
                await outbox.put([Outgoing(f"{root}/a{n % 4}", body, new_id(), f"a{n % 4}")])
                print("put", n, outbox._handed, flush=True)  # returned: n must survive

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    """
)


def _stored(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [json.loads(r[0])["n"] for r in db.execute("SELECT payload FROM msg")]


async def test_a_put_that_returned_survives_sigkill_while_delivering(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    seen = Collector()
    async with MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch:
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, str(tmp_path), str(broker.port), topic_root,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert child.stdout is not None
        returned: list[int] = []
        handed = 0
        async with asyncio.timeout(60):
            while len(returned) < 3000:
                line = (await child.stdout.readline()).split()
                assert line, "the child ended"
                if line[0] == b"put":  # not a log line
                    n, handed = int(line[1]), int(line[2])
                    returned.append(n)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        async with asyncio.timeout(10):  # what the broker acked reaches the watcher
            while True:
                before = len(seen.seen)
                await asyncio.sleep(0.3)
                if len(seen.seen) == before:
                    break
    delivered = {json.loads(p)["n"] for _, p in seen.seen}
    kept = set(_stored(tmp_path / "outbox.db"))
    lost = [n for n in returned if n not in kept and n not in delivered]
    assert not lost, f"{len(lost)} messages lost after put() returned, first {lost[:5]}"
    assert delivered, "nothing was delivered before the kill: the test proves nothing"
    assert handed < len(returned) // 2, f"{handed} jobs on the worker: commits were not inline"


async def test_wal_stays_bounded_and_acked_rows_go_with_commits_on_the_loop(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    cap = 1024 * 1024  # 256 pages: checkpoints every 64 pages of WAL
    outbox = open_outbox(OutboxSettings(max_bytes=cap), tmp_path)
    assert isinstance(outbox, SqliteOutbox)
    wal = tmp_path / "outbox.db-wal"
    seen = Collector()
    n = 1500
    biggest_wal = 0
    async with (
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttClient(mqtt_settings(broker), client_id="up", name="up") as up,
    ):
        watch.subscribe(f"{topic_root}/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        await connected(up)
        delivery = asyncio.create_task(outbox.deliver(MqttSink(up)))
        for i in range(n):
            body = json.dumps({"n": i, "pad": "x" * 400}).encode()
            await outbox.put([Outgoing(f"{topic_root}/a", body, new_id(), "a")])
            biggest_wal = max(biggest_wal, wal.stat().st_size if wal.exists() else 0)
        async with asyncio.timeout(30):
            await seen.wait_for(lambda: len(seen.seen) >= n)
            while outbox.depth():
                await asyncio.sleep(0.02)
        delivery.cancel()
        await asyncio.gather(delivery, return_exceptions=True)
    handed = outbox._handed
    await outbox.close()
    assert sorted(json.loads(p)["n"] for _, p in seen.seen) == list(range(n))  # once each
    assert _stored(tmp_path / "outbox.db") == []
    # The WAL: its checkpoint size (64 pages at this cap) plus one transaction, at most.
    assert biggest_wal <= 32 + (64 + 8) * (PAGE_SIZE + 24), biggest_wal
    assert handed < n // 4, f"{handed} jobs on the worker: commits and deletes were not inline"


async def test_another_writer_holding_the_file_never_stalls_the_loop(tmp_path: Path) -> None:
    """Its lock is waited for on the worker thread; put() returns once the row is stored."""
    outbox = open_outbox(OutboxSettings(), tmp_path)
    await outbox.put([Outgoing("t/a", b"0", new_id(), "a")])  # the first commit: on the worker
    other = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # an operator's sqlite3 shell, say, in a write
    loop = asyncio.get_running_loop()
    loop.call_later(1.0, other.execute, "ROLLBACK")
    gaps: list[float] = []

    async def tick() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last - 0.01)
            last = loop.time()

    ticker = asyncio.create_task(tick())
    started = loop.time()
    await outbox.put([Outgoing("t/a", b"1", new_id(), "a")])
    waited = loop.time() - started
    ticker.cancel()
    other.close()
    await outbox.close()
    assert waited >= 0.9, "put() returned while another connection held the write lock"
    stall = max(gaps, default=waited)  # no tick at all: blocked throughout
    assert stall < 0.3, f"the loop stalled {stall:.2f} s waiting for the lock"
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert [r[0] for r in db.execute("SELECT payload FROM msg ORDER BY seq")] == [b"0", b"1"]
