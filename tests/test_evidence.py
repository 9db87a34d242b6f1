"""The evidence store on disk: exact round trip, re-open, TTL, damage, tombstones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.retention.evidence import (
    Evidence,
    EvidenceError,
    EvidenceNotFoundError,
    EvidenceStore,
    decode,
    encode,
)
from edge_agent.daemon.retention.ring import Samples


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _record(eid: str, created: float, n: int = 50) -> Evidence:
    rng = np.random.default_rng(len(eid) + n)
    ts = 1.7e9 + np.arange(n) / 10
    signals = {
        "vibration": Samples(ts, rng.normal(size=n), np.zeros(n, dtype=np.uint8)),
        "flow": Samples(
            ts[::2].copy(), rng.normal(size=(n + 1) // 2), np.full((n + 1) // 2, 2, np.uint8)
        ),
        "empty": Samples(np.empty(0), np.empty(0), np.empty(0, dtype=np.uint8)),
    }
    return Evidence(
        eid,
        "pump-1",
        float(ts[n // 2]),
        "score 9.1",
        float(ts[0]),
        float(ts[-1]),
        created,
        complete=True,
        signals=signals,
    )


def _same(a: Evidence, b: Evidence) -> None:
    assert a._replace(signals={}) == b._replace(signals={})
    assert list(a.signals) == list(b.signals)
    for name, s in a.signals.items():
        other = b.signals[name]
        for x, y in ((s.ts, other.ts), (s.values, other.values), (s.quality, other.quality)):
            assert x.dtype == y.dtype
            assert np.array_equal(x, y)


def test_encode_decode_is_exact() -> None:
    ev = _record("a", 5.0)
    _same(decode(encode(ev)), ev)


def test_records_survive_reopening_in_order(tmp_path: Path) -> None:
    clock = Clock()
    store = EvidenceStore(tmp_path, 3600, clock)
    for i, eid in enumerate(["x1", "x2", "x3"]):
        image = encode(_record(eid, clock.now + i))
        store.put(eid, image, clock.now + i)
    store.close()  # the writer thread has them all on disk
    total = store.nbytes
    assert total == sum(p.stat().st_size for p in tmp_path.iterdir())

    again = EvidenceStore(tmp_path, 3600, clock)
    assert again.ids() == ["x1", "x2", "x3"]
    assert again.nbytes == total
    _same(again.get("x2"), _record("x2", clock.now + 1))


def test_records_expire_after_their_ttl(tmp_path: Path) -> None:
    clock = Clock()
    store = EvidenceStore(tmp_path, 100, clock)
    store.put("old", encode(_record("old", clock.now)), clock.now)
    clock.now += 50
    store.put("new", encode(_record("new", clock.now)), clock.now)
    clock.now += 60  # "old" is 110 s old, "new" 60 s
    with pytest.raises(EvidenceNotFoundError) as err:
        store.get("old")
    assert err.value.why == "expired"
    assert "EVIDENCE_TTL_S" in str(err.value)
    assert store.get("new").id == "new"
    assert store.flush(10)  # the removal runs on the writer thread, after the writes
    assert not (tmp_path / "old.ev").exists()
    # A store opened later does not bring an expired record back.
    clock.now += 100
    with pytest.raises(EvidenceNotFoundError):
        EvidenceStore(tmp_path, 100, clock).get("new")


def test_unknown_and_evicted_ids_say_why(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, 100, Clock())
    store.put("a", encode(_record("a", 1000.0)), 1000.0)
    store.remove("a", "evicted", "budget")
    for eid, why in (("a", "evicted"), ("never", "unknown")):
        with pytest.raises(EvidenceNotFoundError) as err:
            store.get(eid)
        assert err.value.why == why
    assert store.nbytes == 0


def test_leftovers_are_removed_and_damage_is_reported(tmp_path: Path) -> None:
    clock = Clock()
    store = EvidenceStore(tmp_path, 3600, clock)
    store.put("good", encode(_record("good", clock.now)), clock.now)
    store.close()
    (tmp_path / ".half.tmp").write_bytes(b"partial")
    (tmp_path / "junk.ev").write_bytes(b"\x00")
    again = EvidenceStore(tmp_path, 3600, clock)
    assert again.ids() == ["good"]
    assert not (tmp_path / ".half.tmp").exists()
    # A body damaged after opening: a clear error naming the file, not garbage.
    path = tmp_path / "good.ev"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(EvidenceError, match=r"good\.ev"):
        again.get("good")
