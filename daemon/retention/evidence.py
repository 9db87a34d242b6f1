"""Evidence records and their store on disk: one file per record, a TTL, a tombstone memory.

A record file is a 4-byte big-endian header length, a msgpack header, then for each signal
its raw float64 timestamps, float64 values and uint8 qualities. Opening the store reads only
the headers. Files are written to a temporary name, synced and renamed, so a crash leaves
either the whole record or none. The byte budget is enforced by `Retention`, which shares it
with the compressed history; this module only keeps the accounting.

The disk work (write, fsync, rename, and the removal of evicted or expired records) runs on
the store's writer thread (`writer`), never on the event loop: `put` queues a record and
returns, `get` serves it from memory until it is on disk, and a write that fails is collected
on the caller's side (`settle`, run by `expire`): the record is forgotten as lost, counted
(edge_evidence_records_total{outcome="failed"}) and logged, as when the loop wrote it. The
store is not thread-safe otherwise: call it from the event loop (or one worker) only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import numpy as np
import structlog

from edge_agent.core.errors import EdgeAgentError
from edge_agent.core.logs import RateLimited
from edge_agent.core.metrics import EVIDENCE_RECORDS, EVIDENCE_WRITE_WAITS, RETENTION_EVICTIONS
from edge_agent.daemon.retention.ring import Samples
from edge_agent.daemon.retention.writer import Writer, remove_file

log = structlog.get_logger(__name__)

SUFFIX = ".ev"
_TOMBSTONES = 4096  # ids remembered after expiry or eviction, to say why they are gone
_LEN = 4
# Bytes of records waiting for the disk before `put` waits, and how long it waits before the
# record is refused (lost): a stalled disk then costs the loop at most this, once a record.
QUEUE_BYTES = 8 * 2**20
QUEUE_WAIT_S = 2.0
CLOSE_S = 2.0  # the agent's stop gives the closes after the outbox's drain 4 s in all

Gone = Literal["unknown", "expired", "evicted", "lost"]


class EvidenceError(EdgeAgentError):
    """An evidence record could not be stored or read."""


class EvidenceNotFoundError(EvidenceError):
    """No record under this id: never made here, expired, evicted, or lost (write failed)."""

    def __init__(self, evidence_id: str, why: Gone, detail: str = "") -> None:
        self.evidence_id = evidence_id
        self.why: Gone = why
        super().__init__(f"evidence {evidence_id}: {why}{f' ({detail})' if detail else ''}")


class EvidencePendingError(EvidenceError):
    """The record is still recording its post-trigger window."""

    def __init__(self, evidence_id: str, asset: str, end: float) -> None:
        self.evidence_id = evidence_id
        super().__init__(
            f"evidence {evidence_id}: still recording; complete once asset {asset!r} "
            f"reports a reading after ts={end}"
        )


class Evidence(NamedTuple):
    """Raw samples of one asset's signals in `[start, end]` around a trigger at `ts`."""

    id: str
    asset: str
    ts: float
    reason: str
    start: float
    end: float
    created: float  # store clock when frozen; the TTL counts from here
    complete: bool  # False when cut short (too many pending records, or shutdown)
    signals: dict[str, Samples]

    def to_builtins(self) -> dict[str, object]:
        """A JSON-ready view; floats survive the round trip exactly."""
        return {
            "id": self.id,
            "asset": self.asset,
            "ts": self.ts,
            "reason": self.reason,
            "start": self.start,
            "end": self.end,
            "created": self.created,
            "complete": self.complete,
            "signals": {
                name: {
                    "ts": s.ts.tolist(),
                    "value": s.values.tolist(),
                    "quality": s.quality.tolist(),
                }
                for name, s in self.signals.items()
            },
        }


# A record's header on disk is an array: Evidence's fields in order, with `signals` given as
# (name, sample count) pairs; the samples follow the header in that order.
_Header = tuple[str, str, float, str, float, float, float, bool, list[tuple[str, int]]]


class _Entry(NamedTuple):
    path: Path
    created: float
    nbytes: int


_header_encoder = msgspec.msgpack.Encoder()
_header_decoder = msgspec.msgpack.Decoder(_Header)


def encode(ev: Evidence) -> bytes:
    """The file image of one record."""
    counts = [(name, int(s.ts.size)) for name, s in ev.signals.items()]
    header = _header_encoder.encode((*ev[:-1], counts))
    parts = [len(header).to_bytes(_LEN, "big"), header]
    for s in ev.signals.values():
        parts += [
            s.ts.astype("<f8").tobytes(),
            s.values.astype("<f8").tobytes(),
            s.quality.astype("u1").tobytes(),
        ]
    return b"".join(parts)


def decode(data: bytes) -> Evidence:
    """Parse one file image; raises ValueError or msgspec.DecodeError when damaged."""
    head, counts, body = _parse_header(data)
    signals: dict[str, Samples] = {}
    at = body
    for name, n in counts:
        ts = np.frombuffer(data, "<f8", n, at).astype(np.float64)
        values = np.frombuffer(data, "<f8", n, at + 8 * n).astype(np.float64)
        quality = np.frombuffer(data, "u1", n, at + 16 * n).astype(np.uint8)
        signals[name] = Samples(ts, values, quality)
        at += 17 * n
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes left over after the last signal")
    return head._replace(signals=signals)


def _parse_header(data: bytes) -> tuple[Evidence, list[tuple[str, int]], int]:
    """The record without samples, its signals' sample counts, and where the samples start."""
    if len(data) < _LEN:
        raise ValueError("shorter than its length prefix")
    size = int.from_bytes(data[:_LEN], "big")
    h = _header_decoder.decode(data[_LEN : _LEN + size])
    return Evidence(*h[:-1], signals={}), h[-1], _LEN + size


class EvidenceStore:
    """Evidence files under `root`, oldest first, with a TTL on the store's clock."""

    def __init__(
        self, root: Path, ttl_s: float, clock: Callable[[], float], log_interval_s: float = 60.0
    ) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._clock = clock
        self._index: OrderedDict[str, _Entry] = OrderedDict()
        self._gone: OrderedDict[str, tuple[Gone, str]] = OrderedDict()
        self._writing: dict[str, tuple[bool, str]] = {}  # id -> complete, asset; until settled
        self._writer = Writer("evidence-writer", QUEUE_BYTES, QUEUE_WAIT_S)
        self._limit = RateLimited(log_interval_s)
        self.nbytes = 0
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # Degrade, as the outbox does: every record is refused (counted failed) until then.
            log.error(  # noqa: TRY400 - the reason is in the message
                "evidence_store_unavailable",
                path=str(root),
                error=str(exc),
                action="evidence records are not kept; fix EDGE_AGENT__STATE_DIR",
            )
            return
        self._load()

    def _load(self) -> None:
        found: list[tuple[float, str, _Entry]] = []
        for path in root_files(self.root):
            if path.suffix == ".tmp":
                # A write that did not reach its rename: the record never existed.
                log.warning("evidence_leftover_removed", path=str(path))
                remove_file(path)
                continue
            if path.suffix != SUFFIX:
                log.warning("evidence_foreign_file_ignored", path=str(path))
                continue
            try:
                with path.open("rb") as f:
                    head = f.read(_LEN)
                    head += f.read(int.from_bytes(head, "big") if len(head) == _LEN else 0)
                h, _, _ = _parse_header(head)
                size = path.stat().st_size
            except (OSError, ValueError, msgspec.DecodeError) as exc:
                log.exception("evidence_unreadable_skipped", path=str(path), error=str(exc))
                continue
            found.append((h.created, h.id, _Entry(path, h.created, size)))
        for _, eid, entry in sorted(found, key=lambda x: (x[0], x[1])):
            self._index[eid] = entry
            self.nbytes += entry.nbytes

    def __contains__(self, evidence_id: str) -> bool:
        return evidence_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def ids(self) -> list[str]:
        """Stored ids, oldest first."""
        return list(self._index)

    def put(
        self, evidence_id: str, image: bytes, created: float, complete: bool = True, asset: str = ""
    ) -> None:
        """Queue one encoded record for the disk (the caller has made room for it).

        It is readable at once; its outcome (complete or cut, or failed) is counted once it is
        on disk or its write failed. Waits only while more than QUEUE_BYTES wait for the disk.
        """
        self.settle()  # what finished since: `_writing` and the writer's list stay bounded
        path = self.root / f"{evidence_id}{SUFFIX}"
        self._writing[evidence_id] = (complete, asset)
        waited = self._writer.write(evidence_id, path, image)
        if waited != 0.0:
            EVIDENCE_WRITE_WAITS.inc()
            log.warning(
                "evidence_write_waited",
                id=evidence_id,
                waited_s=round(QUEUE_WAIT_S if waited is None else waited, 3),
                queued_bytes_limit=QUEUE_BYTES,
                refused=waited is None,
            )
        if waited is None:
            detail = f"the disk took none of the {QUEUE_BYTES} bytes before it in {QUEUE_WAIT_S} s"
            self._lost(evidence_id, f"evidence {evidence_id}: not written: {detail}")
            return
        self._index[evidence_id] = _Entry(path, created, len(image))
        self.nbytes += len(image)

    def settle(self) -> None:
        """Count the writes finished since the last call; forget the failed ones as lost."""
        for eid, error in self._writer.done():
            if eid not in self._writing:  # given up at close
                continue
            if error is not None:
                self._lost(eid, f"evidence {eid}: {error}")
                continue
            complete, _ = self._writing.pop(eid)
            EVIDENCE_RECORDS.labels("complete" if complete else "cut").inc()

    def _lost(self, evidence_id: str, error: str) -> None:
        """A record that will not be on disk: forgotten as lost, counted and logged."""
        _, asset = self._writing.pop(evidence_id, (True, ""))
        entry = self._index.pop(evidence_id, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
        if entry is not None or evidence_id not in self._gone:  # else evicted or expired first
            self.forget(evidence_id, "lost", error)
        EVIDENCE_RECORDS.labels("failed").inc()
        held = self._limit.allow("evidence_write_failed")
        if held is not None:
            log.warning(
                "evidence_write_failed", suppressed=held, id=evidence_id, asset=asset, error=error
            )

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write and removal is done (False: `timeout_s` passed)."""
        done = self._writer.flush(timeout_s)
        self.settle()
        return done

    def close(self, timeout_s: float = CLOSE_S) -> None:
        """Finish the queued writes within `timeout_s`; a record not on disk by then is lost."""
        left = self._writer.close(timeout_s)
        self.settle()
        if left:
            log.error(
                "evidence_not_written_at_stop",
                records=len(left),
                ids=left[:16],
                bound_s=timeout_s,
                action="the disk is too slow or stalled; check it",
            )
        for eid in left:
            self._lost(eid, f"evidence {eid}: not on disk within {timeout_s} s of the stop")

    def get(self, evidence_id: str) -> Evidence:
        """Read one record; EvidenceNotFoundError says whether it is unknown, expired or evicted."""
        self.expire()  # an expired record must not come back just because no sweep ran yet
        entry = self._index.get(evidence_id)
        if entry is None:
            why, detail = self._gone.get(evidence_id, ("unknown", "not made here, or gone"))
            raise EvidenceNotFoundError(evidence_id, why, detail)
        try:
            image = self._writer.image(evidence_id)  # None once it is on disk
            return decode(entry.path.read_bytes() if image is None else image)
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            raise EvidenceError(
                f"evidence {evidence_id}: {entry.path} is unreadable: {exc}"
            ) from exc

    def oldest(self) -> tuple[str, float] | None:
        """The id that eviction takes next, and when it was stored."""
        eid = next(iter(self._index), None)
        return None if eid is None else (eid, self._index[eid].created)

    def remove(self, evidence_id: str, why: Gone, detail: str) -> int:
        """Delete one record (on the writer, after its write), remember why; the bytes freed."""
        entry = self._index.pop(evidence_id, None)
        self.forget(evidence_id, why, detail)
        if entry is None:
            return 0
        self._writer.unlink(entry.path)
        self.nbytes -= entry.nbytes
        return entry.nbytes

    def forget(self, evidence_id: str, why: Gone, detail: str) -> None:
        """Remember that an id is gone and why (bounded; the oldest memory goes first)."""
        self._gone[evidence_id] = (why, detail)
        while len(self._gone) > _TOMBSTONES:
            self._gone.popitem(last=False)

    def expire(self) -> list[tuple[str, float]]:
        """Settle finished writes, remove records older than the TTL; their ids and times."""
        self.settle()
        now = self._clock()
        gone: list[tuple[str, float]] = []
        while self._index:
            eid, entry = next(iter(self._index.items()))
            if now - entry.created < self.ttl_s:
                break
            self.remove(eid, "expired", f"older than EDGE_RETENTION__EVIDENCE_TTL_S={self.ttl_s}")
            RETENTION_EVICTIONS.labels("evidence", "ttl").inc()
            gone.append((eid, entry.created))
        return gone


def root_files(root: Path) -> list[Path]:
    """Plain files directly under `root` (the store keeps no sub-directories)."""
    return [p for p in root.iterdir() if p.is_file()]
