"""The SQLite outbox: restart, byte cap and drop policy, disk full, read-only, corrupt file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.uplink import MqttSink
from edge_agent.core.readings import Outgoing, Priority
from edge_agent.daemon.outbox.queue import SqliteOutbox, open_outbox
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.outbox.store import PAGE_SIZE
from edge_agent.simulator.broker import Broker
from tests.test_mqtt import Collector, connected, mqtt_settings, sample

SMALL = 64 * 1024  # the smallest cap: 16 pages


def message(n: int, priority: Priority = Priority.RECOMMENDATION, size: int = 900) -> Outgoing:
    body = f"{n:06d}".encode() + b"x" * (size - 6)
    return Outgoing(
        f"t/{priority.name.lower()}", body, f"{priority.name[0]}{n:06d}", f"a{n % 4}", priority
    )


def stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT msg_id FROM msg ORDER BY seq")]


async def on_db(outbox: SqliteOutbox, sql: str) -> None:
    """Run SQL on the outbox's own connection, in its worker thread (a test-only lever)."""
    db = outbox._store._db
    assert db is not None
    call: Callable[[], Any] = lambda: db.execute(sql)  # noqa: E731
    await outbox._call(call)


def dropped(priority: str) -> float:
    return sample("edge_outbox_dropped_total", {"priority": priority})


async def test_survives_a_restart_and_replays_in_order(tmp_path: Path) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    await outbox.put([message(i, Priority.DIGEST) for i in range(3)])
    await outbox.put([message(i) for i in range(3)])
    await outbox.close()
    again = open_outbox(OutboxSettings(), tmp_path)
    assert again.depth() == 6
    assert isinstance(again, SqliteOutbox)
    page = await again._call(again._store.page, 10, frozenset())
    assert [m.msg_id for _, m in page] == [
        "R000000", "R000001", "R000002", "D000000", "D000001", "D000002"
    ]  # fmt: skip
    await again.close()


async def test_byte_cap_bounds_the_file_and_drops_by_policy(tmp_path: Path) -> None:
    settings = OutboxSettings(max_bytes=SMALL)
    outbox = open_outbox(settings, tmp_path)
    before = {p: dropped(p) for p in ("digest", "recommendation")}
    digests = [message(i, Priority.DIGEST) for i in range(40)]
    recs = [message(i) for i in range(60)]
    path = tmp_path / "outbox.db"
    wal = tmp_path / "outbox.db-wal"
    biggest, biggest_wal = 0, 0
    for m in [*digests, *recs]:
        await outbox.put([m])
        biggest = max(biggest, path.stat().st_size)
        biggest_wal = max(biggest_wal, wal.stat().st_size if wal.exists() else 0)
    ids = stored_ids(path)
    await outbox.close()
    # The bound: the main file never passes the cap (whole pages, overhead 0); the WAL
    # beside it stays within its checkpoint size (16 pages at this cap) plus one transaction.
    assert path.stat().st_size <= SMALL
    assert biggest <= SMALL
    assert biggest_wal <= 32 + (16 + 4) * (PAGE_SIZE + 24)  # header; frames: page + 24 B
    lost_d = [m.msg_id for m in digests if m.msg_id not in ids]
    lost_r = [m.msg_id for m in recs if m.msg_id not in ids]
    assert lost_d, "the cap was never reached: the test proves nothing"
    # Lowest class first: a recommendation goes only once every digest has gone ...
    assert not lost_r or len(lost_d) == len(digests)
    # ... and oldest first within a class.
    assert lost_d == [m.msg_id for m in digests[: len(lost_d)]]
    assert lost_r == [m.msg_id for m in recs[: len(lost_r)]]
    assert dropped("digest") - before["digest"] == len(lost_d)
    assert dropped("recommendation") - before["recommendation"] == len(lost_r)
    print(
        f"cap {SMALL} B: kept {len(ids)}, dropped {len(lost_d)} digests, {len(lost_r)} recs; "
        f"largest file {biggest} B, largest WAL {biggest_wal} B"
    )


async def test_lower_class_than_everything_stored_is_dropped_itself(tmp_path: Path) -> None:
    outbox = open_outbox(OutboxSettings(max_bytes=SMALL), tmp_path)
    # Large messages (overflow pages): each drop frees exactly what the next one needs.
    before_r = dropped("recommendation")
    for i in range(6):
        await outbox.put([message(i, size=20_000)])
    assert dropped("recommendation") > before_r, "the cap was never reached"
    before = dropped("digest")
    await outbox.put([message(0, Priority.DIGEST, size=20_000)])
    ids = stored_ids(tmp_path / "outbox.db")
    await outbox.close()
    assert "D000000" not in ids
    assert dropped("digest") - before == 1


async def test_disk_full_degrades_to_memory_and_recovers(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    assert isinstance(outbox, SqliteOutbox)
    await outbox.put([message(0)])
    # Simulated full disk: the file may not grow by a single page any more.
    await on_db(outbox, "PRAGMA max_page_count=1")
    with capture_logs() as logs:
        for i in range(1, 60):
            await outbox.put([message(i, size=2000)])
    assert outbox.status() == "memory (full)"
    assert sample("edge_outbox_degraded") == 1
    assert outbox.depth() == 60
    assert [e["event"] for e in logs].count("outbox_degraded") == 1  # loud, once
    assert "outbox.db" in next(e for e in logs if e["event"] == "outbox_degraded")["file"]
    # Space returns: the next put moves the memory buffer back to the file.
    await on_db(outbox, f"PRAGMA max_page_count={outbox._store.cap_pages}")
    outbox._next_recovery = 0.0
    await outbox.put([message(60)])
    assert outbox.status() == "disk"
    assert sample("edge_outbox_degraded") == 0
    assert len(stored_ids(tmp_path / "outbox.db")) == 61
    await deliver_all(outbox, broker, topic_root, 61)
    await outbox.close()


async def test_read_only_file_degrades_and_delivers_from_memory(
    broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    assert isinstance(outbox, SqliteOutbox)
    await on_db(outbox, "PRAGMA query_only=1")  # what a read-only remount looks like to SQLite
    await outbox.put([message(i) for i in range(5)])
    assert outbox.status() == "memory (readonly)"
    assert outbox.depth() == 5
    assert stored_ids(tmp_path / "outbox.db") == []
    await deliver_all(outbox, broker, topic_root, 5)
    await outbox.close()


async def deliver_all(outbox: SqliteOutbox, broker: Broker, root: str, n: int) -> None:
    seen = Collector()
    async with (
        MqttClient(mqtt_settings(broker), client_id="watch", name="watch") as watch,
        MqttClient(mqtt_settings(broker), client_id="up", name="up") as up,
    ):
        watch.subscribe("t/#", 1, seen)
        await connected(watch)
        await watch.wait_subscribed()
        task = asyncio.create_task(outbox.deliver(MqttSink(up)))
        await seen.wait_for(lambda: len(seen.seen) >= n)
        async with asyncio.timeout(10):
            while outbox.depth():
                await asyncio.sleep(0.02)
        task.cancel()
    del root
    assert len({p[:6] for _, p in seen.seen}) == n


async def test_corrupt_file_is_moved_aside_with_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with capture_logs() as logs:
        outbox = open_outbox(OutboxSettings(), tmp_path)
    errors = [e for e in logs if e["event"] == "outbox_corrupt"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert errors[0]["file"] == str(path)
    aside = Path(errors[0]["moved_to"])
    assert aside.parent == tmp_path
    assert aside.name.startswith("outbox.db.corrupt-")
    assert aside.read_bytes().startswith(b"this is not a database")
    await outbox.put([message(1)])
    assert outbox.depth() == 1
    assert stored_ids(path) == ["R000001"]
    await outbox.close()


def test_page_size_is_what_the_bound_assumes(tmp_path: Path) -> None:
    outbox = open_outbox(OutboxSettings(), tmp_path)
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    asyncio.run(outbox.close())


async def test_state_dir_that_cannot_be_created_starts_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    with capture_logs() as logs:
        outbox = open_outbox(OutboxSettings(), blocker / "state")
    assert isinstance(outbox, SqliteOutbox)
    assert outbox.status() == "memory (io)"
    assert any(e["event"] == "outbox_degraded" for e in logs)
    await outbox.put([message(1)])
    assert outbox.depth() == 1
    await outbox.close()
