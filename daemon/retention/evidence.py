"""Evidence records and their store on disk: one file per record, a TTL, a tombstone memory.

A record file is a 4-byte big-endian header length, a msgpack header, then for each signal
its raw float64 timestamps, float64 values and uint8 qualities. Opening the store reads only
the headers. Files are written to a temporary name, synced and renamed, so a crash leaves
either the whole record or none. The byte budget is enforced by `Retention`, which shares it
with the compressed history; this module only keeps the accounting.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

import msgspec
import numpy as np
import structlog

from edge_agent.core.errors import EdgeAgentError
from edge_agent.core.metrics import RETENTION_EVICTIONS
from edge_agent.daemon.retention.ring import Samples

log = structlog.get_logger(__name__)

SUFFIX = ".ev"
_TOMBSTONES = 4096  # ids remembered after expiry or eviction, to say why they are gone
_LEN = 4

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

    def __init__(self, root: Path, ttl_s: float, clock: Callable[[], float]) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._clock = clock
        self._index: OrderedDict[str, _Entry] = OrderedDict()
        self._gone: OrderedDict[str, tuple[Gone, str]] = OrderedDict()
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
                _remove(path)
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

    def put(self, evidence_id: str, image: bytes, created: float) -> None:
        """Store one encoded record (the caller has made room for it)."""
        path = self.root / f"{evidence_id}{SUFFIX}"
        tmp = self.root / f".{evidence_id}.tmp"
        try:
            with tmp.open("wb") as f:
                f.write(image)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        except OSError as exc:
            _remove(tmp)  # on a read-only or failing disk this fails too: never past here
            raise EvidenceError(f"evidence {evidence_id}: cannot write {path}: {exc}") from exc
        self._index[evidence_id] = _Entry(path, created, len(image))
        self.nbytes += len(image)

    def get(self, evidence_id: str) -> Evidence:
        """Read one record; EvidenceNotFoundError says whether it is unknown, expired or evicted."""
        self.expire()  # an expired record must not come back just because no sweep ran yet
        entry = self._index.get(evidence_id)
        if entry is None:
            why, detail = self._gone.get(evidence_id, ("unknown", "not made here, or gone"))
            raise EvidenceNotFoundError(evidence_id, why, detail)
        try:
            return decode(entry.path.read_bytes())
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            raise EvidenceError(
                f"evidence {evidence_id}: {entry.path} is unreadable: {exc}"
            ) from exc

    def oldest(self) -> tuple[str, float] | None:
        """The id that eviction takes next, and when it was stored."""
        eid = next(iter(self._index), None)
        return None if eid is None else (eid, self._index[eid].created)

    def remove(self, evidence_id: str, why: Gone, detail: str) -> int:
        """Delete one record, remember why; return the bytes freed."""
        entry = self._index.pop(evidence_id, None)
        self.forget(evidence_id, why, detail)
        if entry is None:
            return 0
        try:
            entry.path.unlink(missing_ok=True)
        except OSError as exc:
            # The index no longer counts it; say so loudly since the disk still holds it.
            log.exception("evidence_unlink_failed", path=str(entry.path), error=str(exc))
        self.nbytes -= entry.nbytes
        return entry.nbytes

    def forget(self, evidence_id: str, why: Gone, detail: str) -> None:
        """Remember that an id is gone and why (bounded; the oldest memory goes first)."""
        self._gone[evidence_id] = (why, detail)
        while len(self._gone) > _TOMBSTONES:
            self._gone.popitem(last=False)

    def expire(self) -> list[tuple[str, float]]:
        """Remove records older than the TTL; return their ids and store times."""
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


def _remove(path: Path) -> None:
    """Remove a file if it is there; a failure (read-only disk) is logged, never raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("evidence_file_not_removed", path=str(path), error=str(exc))


def root_files(root: Path) -> list[Path]:
    """Plain files directly under `root` (the store keeps no sub-directories)."""
    return [p for p in root.iterdir() if p.is_file()]
