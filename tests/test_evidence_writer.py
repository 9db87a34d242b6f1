"""Evidence records are written on the store's writer thread, never on the event loop (issue 14).

A slow disk is made by holding the writer's fsync (the real one runs once released), a
failing one with real files in the way; everything else is the real store on real files.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge_agent.core.metrics import REGISTRY
from edge_agent.core.readings import Reading
from edge_agent.daemon.retention import writer
from edge_agent.daemon.retention.evidence import EvidenceNotFoundError, EvidenceStore
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings

T0 = 1_750_000_000.0
SIGNALS = ("temperature", "vibration")
HOLD_S = 10.0  # a held fsync goes on by itself after this, so a blocked loop fails, not hangs


class HeldFsync:
    """The writer's fsync, held until `release()`: a disk that takes its time."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        self.released.wait(HOLD_S)
        os.fsync(fd)

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldFsync]:
    hold = HeldFsync()
    monkeypatch.setattr(writer, "_fsync", hold)
    yield hold
    hold.release()


def _records(outcome: str) -> float:
    return REGISTRY.get_sample_value("edge_evidence_records_total", {"outcome": outcome}) or 0.0


def _retention(state: Path) -> Retention:
    settings = RetentionSettings(
        ring_seconds=120.0, ring_rate_hz=1.0, evidence_pre_s=10.0, evidence_post_s=10.0
    )
    return Retention(settings, state, gateway="gw")


def _feed(ret: Retention, asset: str, start: int, stop: int) -> None:
    for t in range(start, stop):
        ret.ingest([Reading(asset, s, T0 + t, float(t % 17) + i) for i, s in enumerate(SIGNALS)])


def _files(state: Path) -> set[str]:
    return {p.name for p in (state / "evidence").iterdir()}


async def test_the_loop_goes_on_while_a_record_is_written_and_reads_it_meanwhile(
    tmp_path: Path, held: HeldFsync
) -> None:
    ret = _retention(tmp_path)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    _feed(ret, "p1", 0, 40)
    first = ret.trigger("p1", T0 + 20, "flag", publish=True)  # its window is past: frozen now
    while not held.entered.is_set():  # the writer thread is inside the record's fsync
        await asyncio.sleep(0.001)
    before = turns
    for _ in range(50):  # the loop keeps working while the disk holds the write
        await asyncio.sleep(0)
    _feed(ret, "p2", 0, 40)
    second = ret.trigger("p2", T0 + 20, "flag")  # queued behind the first
    ev = ret.get(first)  # from memory: accepted, so never "not found", never half a file
    assert ev.complete
    assert ev.signals["temperature"].ts.size == 21
    assert ret.get(second).asset == "p2"
    [msg] = ret.take_evidence()  # published from memory too
    assert first in msg.key
    # All of that happened while the first write was still held: neither record is on disk.
    assert not held.released.is_set()
    assert turns - before >= 50
    assert f"{first}.ev" not in _files(tmp_path)
    assert f"{second}.ev" not in _files(tmp_path)
    held.release()
    assert await asyncio.to_thread(ret.evidence.flush, 10)
    assert {f"{first}.ev", f"{second}.ev"} <= _files(tmp_path)
    assert (
        ret.get(first).signals["temperature"].values.tolist()
        == ev.signals["temperature"].values.tolist()
    )
    ticker.cancel()
    ret.close()


def test_a_failed_write_is_counted_forgotten_as_lost_and_not_published(tmp_path: Path) -> None:
    ret = _retention(tmp_path)
    evidence = tmp_path / "evidence"
    evidence.rmdir()
    evidence.write_bytes(b"")  # the store's directory is now a file: every write fails
    failed, complete = _records("failed"), _records("complete")
    _feed(ret, "p1", 0, 40)
    with capture_logs() as logs:
        eid = ret.trigger("p1", T0 + 20, "flag", publish=True)
        assert ret.evidence.flush(10)
        assert ret.take_evidence() == []
    assert _records("failed") - failed == 1
    assert _records("complete") == complete
    with pytest.raises(EvidenceNotFoundError) as err:
        ret.get(eid)
    assert err.value.why == "lost"
    assert "cannot write" in str(err.value)
    assert ret.usage.evidence == 0
    assert eid not in ret.evidence
    [warned] = [e for e in logs if e["event"] == "evidence_write_failed"]
    assert warned["id"] == eid
    assert warned["asset"] == "p1"


def test_a_failed_rename_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, 3600, time.time)
    (tmp_path / "x.ev").mkdir()
    (tmp_path / "x.ev" / "in-the-way").write_bytes(b"")  # the rename onto it fails
    failed = _records("failed")
    store.put("x", b"\x00" * 100, time.time())
    assert store.flush(10)
    assert _records("failed") - failed == 1
    assert {p.name for p in tmp_path.iterdir()} == {"x.ev"}
    with pytest.raises(EvidenceNotFoundError, match="lost"):
        store.get("x")


def test_close_leaves_every_accepted_record_on_disk_and_a_restart_reads_them(
    tmp_path: Path,
) -> None:
    ret = _retention(tmp_path)
    ids, kept = [], {}
    complete, cut = _records("complete"), _records("cut")
    for a in range(20):
        asset = f"p{a}"
        _feed(ret, asset, 0, 40)
        ids.append(ret.trigger(asset, T0 + 20, "flag"))
        ids.append(ret.trigger(asset, T0 + 35, "flag"))  # pending: frozen, cut, at close
    for eid in ids[::2]:
        kept[eid] = ret.get(eid)
    ret.close()
    assert (_records("complete") - complete, _records("cut") - cut) == (20, 20)
    assert _files(tmp_path) == {f"{eid}.ev" for eid in ids}
    again = _retention(tmp_path)
    assert sorted(again.evidence.ids()) == sorted(ids)
    assert again.usage.evidence == sum(p.stat().st_size for p in (tmp_path / "evidence").iterdir())
    for eid, ev in kept.items():
        got = again.get(eid)
        assert got._replace(signals={}) == ev._replace(signals={})
        assert got.signals["vibration"].values.tolist() == ev.signals["vibration"].values.tolist()
    assert all(not again.get(eid).complete for eid in ids[1::2])
    again.close()


def test_close_is_bounded_when_the_disk_does_not_answer(tmp_path: Path, held: HeldFsync) -> None:
    store = EvidenceStore(tmp_path, 3600, time.time)
    failed = _records("failed")
    for eid in ("a", "b", "c"):
        store.put(eid, b"\x00" * 100, time.time())
    assert held.entered.wait(10)
    with capture_logs() as logs:
        start = time.monotonic()
        store.close(0.2)
        took = time.monotonic() - start
    assert took < 2.0  # the bound, not the held disk, ended the wait
    assert _records("failed") - failed == 3
    assert [e["records"] for e in logs if e["event"] == "evidence_not_written_at_stop"] == [3]
    for eid in ("a", "b", "c"):
        with pytest.raises(EvidenceNotFoundError, match=r"not on disk within 0\.2 s"):
            store.get(eid)
    assert store.nbytes == 0


def test_records_beyond_the_queue_bound_wait_then_are_refused(
    tmp_path: Path, held: HeldFsync
) -> None:
    store = EvidenceStore(tmp_path, 3600, time.time)
    store._writer.max_bytes, store._writer.wait_s = 150, 0.1  # a small bound
    waits = REGISTRY.get_sample_value("edge_evidence_write_waits_total") or 0.0
    failed = _records("failed")
    store.put("a", b"\x00" * 100, time.time())  # in the writer, held
    assert held.entered.wait(10)
    with capture_logs() as logs:
        store.put("b", b"\x00" * 100, time.time())  # 200 bytes would wait: no room in 0.1 s
    assert (REGISTRY.get_sample_value("edge_evidence_write_waits_total") or 0.0) - waits == 1
    assert _records("failed") - failed == 1
    assert [e["refused"] for e in logs if e["event"] == "evidence_write_waited"] == [True]
    assert "b" not in store
    assert store.ids() == ["a"]
    held.release()
    assert store.flush(10)
    assert (tmp_path / "a.ev").read_bytes() == b"\x00" * 100
