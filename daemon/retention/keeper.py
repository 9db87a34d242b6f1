"""Selective retention: raw rings, evidence windows around anomalies, compressed history.

Every signal has a ring of its last `ring_seconds` at full resolution. A trigger freezes
`[ts - pre, ts + post]` of the asset's rings into an evidence record on disk once the asset's
event time (reading timestamps) passes `ts + post`. Normal periods go through deadband and
swinging door into an in-memory history, sent upstream as digests. Evidence and history share
`store_bytes`; evidence outranks history, oldest first within a class. Not thread-safe: call
it from the event loop (or one worker) only.

`ingest` is on the agent's hot path with small batches (often one sample per series), so it
only appends each reading to its series' unwritten list, in one Python pass; the numpy work
(ring write, deadband and door) runs per asset once a series holds `FLUSH_SAMPLES`, and
before anything reads the rings or the history: a trigger, a due evidence window, a digest,
`close`. Observers therefore see the same rings, records and history as if every sample had
been written at once. The unwritten lists are not in the byte budgets; they are bounded
instead: between two calls every series holds fewer than `FLUSH_SAMPLES` readings (references
to the caller's `Reading` tuples, ~100 bytes each), and the series are bounded by `ring_bytes`.
"Pending" means one thing here: an evidence record still recording its post-trigger window.
Wire formats (requests, replies, digests) live in `messages`.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import structlog
from numpy.typing import NDArray

from edge_agent.core.logs import RateLimited
from edge_agent.core.metrics import (
    ASSETS_EVICTED,
    ASSETS_TRACKED,
    EVIDENCE_RECORDS,
    READINGS_DROPPED,
    RETENTION_BYTES,
    RETENTION_EVICTIONS,
)
from edge_agent.core.readings import Outgoing, Priority, Reading, new_id
from edge_agent.daemon.retention.evidence import (
    Evidence,
    EvidenceError,
    EvidencePendingError,
    EvidenceStore,
    encode,
)
from edge_agent.daemon.retention.history import Block, HistoryStore
from edge_agent.daemon.retention.messages import Messages
from edge_agent.daemon.retention.series import Series, SeriesTable
from edge_agent.daemon.retention.settings import RetentionSettings

log = structlog.get_logger(__name__)

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]
EvictionObserver = Callable[[str, str, str, float], None]  # class, key, reason, created
_Part = tuple[Series, F64, F64, U8]
_READY_MAX = 256  # completed records waiting for take_evidence()
# Readings a series holds unwritten before its asset goes through the rings and the compressor:
# the numpy work per flush costs about as much for 1 sample as for 100, so this sets the
# per-reading cost of small batches (see bench_retention) against the memory held outside the
# budgets.
FLUSH_SAMPLES = 128


class Usage(NamedTuple):
    """Bytes held, by class, as accounted."""

    ring: int
    history: int
    evidence: int


class _AgentSection(Protocol):
    @property
    def state_dir(self) -> Path: ...


class _Sections(Protocol):
    """The sections of the agent's settings that retention reads."""

    @property
    def retention(self) -> RetentionSettings: ...

    @property
    def agent(self) -> _AgentSection: ...


class Retention:
    """Rings, evidence and history of one agent, inside the budgets of `RetentionSettings`."""

    def __init__(
        self,
        settings: RetentionSettings,
        state_dir: Path,
        *,
        gateway: str = "",
        clock: Callable[[], float] = time.time,
        on_evict: EvictionObserver | None = None,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self._clock = clock
        self._on_evict = on_evict
        self._series = SeriesTable(settings)
        # Records still recording their post-trigger window, oldest first: everything but
        # `created`, `complete` and `signals`, which are filled in when they freeze.
        self._pending: dict[str, Evidence] = {}
        self._publish: set[str] = set()  # pending ids to hand out once frozen
        self._ready: deque[str] = deque()
        self._messages = Messages(settings, gateway)
        self._limit = RateLimited(settings.log_interval_s)
        self.evidence = EvidenceStore(
            state_dir / "evidence", settings.evidence_ttl_s, clock, settings.log_interval_s
        )
        self.history = HistoryStore(settings.history_ttl_s, clock)
        self._next_sweep = 0.0  # monotonic time of the next look for idle assets
        self._make_room(0)  # the budget may have shrunk since the last run
        self._gauges()

    @classmethod
    def from_settings(cls, settings: _Sections, gateway: str) -> Retention:
        """The agent's retention under `<state_dir>/evidence` (reads two sections only)."""
        return cls(settings.retention, settings.agent.state_dir, gateway=gateway)

    @property
    def request_topic(self) -> str:
        """Subscribe here and pass each payload to `handle_request`."""
        return self._messages.request_topic

    @property
    def response_topic(self) -> str:
        """Where replies go (also carried by every reply's `Outgoing.topic`)."""
        return self._messages.response_topic

    @property
    def usage(self) -> Usage:
        """Bytes held now, by accounting."""
        return Usage(self._series.nbytes, self.history.nbytes, self.evidence.nbytes)

    # --- intake -------------------------------------------------------------------------

    def ingest(self, readings: Sequence[Reading]) -> None:
        """Take a batch of readings (any assets, signals and order)."""
        full, late, refused = self._series.take(readings, self.settings.ring_seconds, FLUSH_SAMPLES)
        for (asset, signal), n in refused.items():
            if not signal:
                self._drop(n, "implausible_ts", asset, "(a reading ring_seconds ahead)")
            elif self._series.uses(signal):  # a signal no model reads: the frames log it
                self._drop(n, "retention_no_ring", asset, signal)
        if late:
            full += self._reorder(readings, late)
        event_time = self._series.event_time
        due = [r.asset for r in self._pending.values() if event_time(r.asset) > r.end]
        assets = dict.fromkeys(full + due)
        for asset in assets:
            self.flush(asset)
        if assets:
            self._maintain()

    def _reorder(self, readings: Sequence[Reading], late: list[tuple[str, str]]) -> list[str]:
        """Redo the series that got readings out of order: in time order, strictly increasing.

        Rare (a connector hands on readings out of order): the series' readings of this batch
        are taken again from the batch, sorted (stable) and cut at the newest before it.
        """
        full: list[str] = []
        for key, n_late in Counter(late).items():
            series = self._series.by_key[key]
            dropped = series.retake([r for r in readings if (r[0], r[1]) == key], n_late)
            if dropped:
                # The rings and the door need strictly increasing time per signal.
                self._drop(dropped, "retention_not_increasing", *key)
            if len(series.unwritten) >= FLUSH_SAMPLES:
                full.append(series.asset)
        return full

    def ingest_frame(
        self,
        asset: str,
        signals: Sequence[str],
        ts: F64,
        values: F64,
        quality: U8 | None = None,
    ) -> None:
        """Take a block of one asset: `ts` (T,), `values` and `quality` (T, len(signals))."""
        if values.shape != (ts.size, len(signals)):
            raise ValueError(f"values of shape {values.shape} do not match ts and signals")
        if ts.size > 1 and not bool(np.all(np.diff(ts) > 0)):
            order = np.argsort(ts, kind="stable")
            ts, values = ts[order], values[order]
            quality = None if quality is None else quality[order]
        if quality is None:
            quality = np.zeros(values.shape, dtype=np.uint8)
        self.flush(asset)  # what is unwritten came first
        parts = [(s, ts, values[:, i], quality[:, i]) for i, s in enumerate(signals)]
        clean = [p for p in (self._clean(asset, *part) for part in parts) if p is not None]
        self._ingest_asset(asset, clean)
        self._maintain()

    def flush(self, asset: str) -> None:
        """Write every unwritten reading of `asset` to its rings, evidence and history."""
        self._series.touch(asset, time.monotonic())
        parts = [(s, *a) for s in self._series.of(asset) if (a := s.take_unwritten()) is not None]
        self._ingest_asset(asset, parts)

    def unwritten_assets(self) -> list[str]:
        """Assets holding readings not yet written (`take_digests` flushes each, in one go)."""
        return self._series.assets_unwritten()

    def _ingest_asset(self, asset: str, clean: list[_Part]) -> None:
        """Write cleaned samples (strictly increasing per series) of one asset, in order."""
        if not clean:
            return
        top = max(float(p[1][-1]) for p in clean)
        # Write up to each pending record's end, freeze it, then go on: so a long block can
        # never push a record's pre-trigger samples out of the ring before it freezes.
        due = self._next_due(asset)
        while clean and due < top:
            rest: list[_Part] = []
            for series, t, v, q in clean:
                k = int(np.searchsorted(t, due, side="right"))
                self._write(series, t[:k], v[:k], q[:k])
                if k < t.size:
                    rest.append((series, t[k:], v[k:], q[k:]))
            for rec in [r for r in self._pending.values() if r.asset == asset and r.end <= due]:
                self._freeze(rec, complete=True)
            clean, due = rest, self._next_due(asset)
        for series, t, v, q in clean:
            self._write(series, t, v, q)

    def _clean(self, asset: str, signal: str, t: F64, v: F64, q: U8) -> _Part | None:
        """The samples a series can take: strictly after its newest, in a ring that fits."""
        series = self._series.for_signal(asset, signal)
        if series is None:
            self._drop(t.size, "retention_no_ring", asset, signal)
            return None
        (t, v, q), dropped = series.clean(t, v, q)
        if dropped:
            # The rings and the door need strictly increasing time per signal.
            self._drop(dropped, "retention_not_increasing", asset, signal)
        return (series, t, v, q) if t.size else None

    def _next_due(self, asset: str) -> float:
        return min((r.end for r in self._pending.values() if r.asset == asset), default=math.inf)

    def _write(self, series: Series, t: F64, v: F64, q: U8) -> None:
        if t.size == 0:
            return
        lost = series.ring.write(t, v, q)
        if lost:
            RETENTION_EVICTIONS.labels("ring", "rate").inc(lost)
            self._warn("retention_ring_overrun", series, lost=lost, rate=self.settings.ring_rate_hz)
        retained = series.compress(t, v, q, self.settings)  # history keeps GOOD values only
        if retained is not None and retained[0].size:
            self._add_history(series, *retained)

    def _add_history(self, series: Series, t: F64, v: F64, deviation: float) -> None:
        self.history.append(series.asset, series.signal, t, v, deviation)
        cap = min(self.settings.history_bytes, self.settings.store_bytes - self.evidence.nbytes)
        while self.history.nbytes > cap:
            block = self.history.pop_oldest()
            assert block is not None
            self._history_gone(block, "budget")

    # --- evidence -----------------------------------------------------------------------

    def trigger(self, asset: str, ts: float, reason: str, publish: bool = False) -> str:
        """Start an evidence record around `ts`; return its id at once.

        With `publish`, the finished record is also handed out by `take_evidence`.
        """
        s = self.settings
        if len(self._pending) >= s.evidence_max_pending:
            oldest = next(iter(self._pending.values()))
            self.flush(oldest.asset)  # which may complete it
            if oldest.id in self._pending:
                log.warning(
                    "evidence_cut", id=oldest.id, asset=oldest.asset, pending=len(self._pending)
                )
                self._freeze(oldest, complete=False)
        start, end = ts - s.evidence_pre_s, ts + s.evidence_post_s
        rec = Evidence(new_id(), asset, ts, reason, start, end, 0.0, complete=False, signals={})
        self._pending[rec.id] = rec
        if publish:
            self._publish.add(rec.id)
        if self._series.event_time(asset) > rec.end:
            self.flush(asset)  # freezes it when the window is among the unwritten readings
            if rec.id in self._pending:
                self._freeze(rec, complete=True)
        self._gauges()
        return rec.id

    def get(self, evidence_id: str) -> Evidence:
        """The record; EvidencePendingError while recording, EvidenceNotFoundError when gone."""
        rec = self._pending.get(evidence_id)
        if rec is not None:
            raise EvidencePendingError(evidence_id, rec.asset, rec.end)
        return self.evidence.get(evidence_id)

    def _freeze(self, rec: Evidence, complete: bool) -> None:
        del self._pending[rec.id]
        publish = rec.id in self._publish
        self._publish.discard(rec.id)
        signals = {s.signal: s.ring.window(rec.start, rec.end) for s in self._series.of(rec.asset)}
        created = self._clock()
        image = encode(rec._replace(created=created, complete=complete, signals=signals))
        if len(image) > self.settings.store_bytes:
            detail = f"{len(image)} bytes, over EDGE_RETENTION__STORE_BYTES"
            self.evidence.forget(rec.id, "evicted", detail)
            EVIDENCE_RECORDS.labels("refused").inc()
            RETENTION_EVICTIONS.labels("evidence", "budget").inc()
            log.error("evidence_refused", id=rec.id, asset=rec.asset, bytes=len(image))
            self._notify("evidence", rec.id, "budget", created)
            return
        self._make_room(len(image))
        # Queued for the writer thread and readable from memory at once: published from there
        # if taken before it is on disk; a failed write is forgotten as lost when settled.
        self.evidence.put(rec.id, image, created, complete, rec.asset)
        if publish and rec.id in self.evidence:
            if len(self._ready) >= _READY_MAX:
                EVIDENCE_RECORDS.labels("publish_dropped").inc()
                log.warning("evidence_publish_dropped", id=self._ready.popleft())
            self._ready.append(rec.id)

    def _make_room(self, nbytes: int) -> None:
        """Evict until `nbytes` more fit: history first, then evidence, oldest first in each."""
        limit = self.settings.store_bytes
        while self.history.nbytes + self.evidence.nbytes + nbytes > limit:
            block = self.history.pop_oldest()
            if block is not None:
                self._history_gone(block, "budget")
                continue
            oldest = self.evidence.oldest()
            if oldest is None:
                break
            eid, created = oldest
            self.evidence.remove(eid, "evicted", "EDGE_RETENTION__STORE_BYTES reached")
            RETENTION_EVICTIONS.labels("evidence", "budget").inc()
            self._notify("evidence", eid, "budget", created)

    # --- output -------------------------------------------------------------------------

    def handle_request(self, payload: bytes) -> Outgoing:
        """Answer one request from `request_topic`: the record, or an error reply, never silence."""
        return self._messages.answer(payload, self.get)

    def take_evidence(self) -> list[Outgoing]:
        """Finished records triggered with `publish=True`, as messages for the outbox."""
        out: list[Outgoing] = []
        while self._ready:
            eid = self._ready.popleft()
            try:
                ev = self.evidence.get(eid)
            except EvidenceError as exc:
                log.warning("evidence_gone_before_publish", id=eid, error=str(exc))
                continue
            out.append(self._messages.record(eid, ev)._replace(priority=Priority.RECOMMENDATION))
        return out

    def take_digests(self) -> list[Outgoing]:
        """History retained since the last call, as DIGEST-priority messages per asset."""
        for asset in self.unwritten_assets():
            self.flush(asset)
        self._maintain()
        unsent = self.history.take_unsent(self.settings.digest_max_points)
        return [self._messages.digest(asset, blocks) for asset, blocks in unsent]

    def close(self) -> None:
        """Freeze pending records (incomplete) and retain every series' last points."""
        for asset in self.unwritten_assets():
            self.flush(asset)
        for rec in list(self._pending.values()):
            self._freeze(rec, complete=False)
        for series in self._series:
            held = series.flush()
            if held is not None and held[0].size:
                self._add_history(series, *held)
        self.evidence.close()  # every accepted record on disk, or named lost past its bound
        self._gauges()

    # --- upkeep -------------------------------------------------------------------------

    def keep_signals(self, signals: Sequence[str] | None) -> None:
        """Retain only the signals a model reads (None: all); the rest never become digests."""
        self._series.keep_signals(signals)

    def _maintain(self) -> None:
        for eid, created in self.evidence.expire():
            self._notify("evidence", eid, "ttl", created)
        for block in self.history.expired():
            self._history_gone(block, "ttl")
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + min(self.settings.asset_idle_s / 4, 60.0)
            recording = {r.asset for r in self._pending.values()}
            for asset in set(self._series.idle(now, self.settings.asset_idle_s)) - recording:
                self._forget(asset)
        self._gauges()

    def _forget(self, asset: str) -> None:
        """Free an idle asset's rings; what its compressors still hold goes to history."""
        self.flush(asset)
        for series in self._series.drop(asset):
            held = series.flush()
            if held is not None and held[0].size:
                self._add_history(series, *held)
        ASSETS_EVICTED.labels("retention", "idle").inc()
        log.info("assets_forgotten", part="retention", asset=asset[:200])

    def _history_gone(self, block: Block, reason: str) -> None:
        RETENTION_EVICTIONS.labels("history", reason).inc(block.size)
        if not block.sent:
            self._warn_key(
                "history_evicted_unsent", asset=block.asset, signal=block.signal, reason=reason
            )
        key = f"{block.asset}/{block.signal}@{block.ts[0]}"
        self._notify("history", key, reason, block.created)

    def _notify(self, cls: str, key: str, reason: str, created: float) -> None:
        if self._on_evict is not None:
            self._on_evict(cls, key, reason, created)

    def _gauges(self) -> None:
        usage = self.usage
        RETENTION_BYTES.labels("ring").set(usage.ring)
        RETENTION_BYTES.labels("history").set(usage.history)
        RETENTION_BYTES.labels("evidence").set(usage.evidence)
        ASSETS_TRACKED.labels("retention").set(self._series.assets)

    def _drop(self, n: int, reason: str, asset: str, signal: str) -> None:
        READINGS_DROPPED.labels(reason).inc(n)
        self._warn_key(reason, asset=asset, signal=signal, dropped=n)

    def _warn(self, event: str, series: Series, **kw: object) -> None:
        self._warn_key(event, asset=series.asset, signal=series.signal, **kw)

    def _warn_key(self, event: str, **kw: object) -> None:
        held = self._limit.allow(event)
        if held is not None:
            log.warning(event, suppressed=held, **kw)
