"""The flow of a reading: frames -> gate -> scorer -> advisor -> outbox.

One task owns the pipeline; sources hand it batches of readings with `ingest` (no queue, no
thread hop: the frames are updated in the source's own callback turn) and it wakes to score
whatever windows are complete, in one batch per lane across that lane's assets. Without
profiles every reading goes straight to the shipped model's lane, as it always did; with
them the router (routing.py) transforms each reading by its asset's profile and hands it to
the asset's lane (lanes.py), or to learning while the asset has no model yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, Reading

if TYPE_CHECKING:
    from edge_agent.daemon.flow.lanes import Lane
    from edge_agent.daemon.flow.routing import Router
    from edge_agent.daemon.outbox.queue import Outbox
    from edge_agent.models.scorer import Scorer
    from edge_agent.rules.engine import Advisor, Recommendation
    from edge_agent.rules.state import RuleStore

log = structlog.get_logger(__name__)

RETENTION_INTERVAL_S = 1.0  # how often evidence and digests move to the outbox
# Retention writes readings to its rings and history in bulk before the digests are taken
# (tens of ms a second at 100 assets). Asset by asset, pausing as long as it worked once
# this long passed: a reading's way to its recommendation takes several turns of the loop,
# and each waited out a slice when they followed one another.
FLUSH_SLICE_S = 0.002
FLUSH_PASSES = 3
MAX_PENDING_REPLIES = 256  # evidence replies waiting for the outbox (at most 1 s worth)


class Retention(Protocol):
    """What the pipeline needs of retention (`daemon.retention.keeper.Retention` has it)."""

    def ingest(self, readings: Sequence[Reading]) -> None:
        """Take a batch of readings."""
        ...

    def trigger(self, asset: str, ts: float, reason: str, publish: bool = False) -> str:
        """Start an evidence record around `ts`; return its id."""
        ...

    def handle_request(self, payload: bytes) -> Outgoing:
        """The reply to one evidence request."""
        ...

    def take_evidence(self) -> list[Outgoing]:
        """Finished records to publish unasked."""
        ...

    def take_digests(self) -> list[Outgoing]:
        """History retained since the last call."""
        ...

    def unwritten_assets(self) -> list[str]:
        """Assets holding readings not yet written."""
        ...

    def flush(self, asset: str) -> None:
        """Write one asset's unwritten readings."""
        ...


class Namespace(Protocol):
    """Where recommendations also go: the Unified Namespace (`connectors.uns.Namespace`)."""

    def messages(self, recommendations: Sequence[Outgoing]) -> list[Outgoing]:
        """The namespace's messages for these recommendation messages."""
        ...


class Pipeline:
    """Turns readings into recommendations in the outbox, through each asset's lane."""

    def __init__(
        self,
        *,
        router: Router,
        outbox: Outbox,
        topic_prefix: str,
        review_topic: str = "needs_review",
        retention: Retention | None = None,
    ) -> None:
        self.router = router
        self.outbox = outbox
        self.retention = retention
        self.namespace: Namespace | None = None  # the Unified Namespace (EDGE_UNS), set by the app
        self._prefix = topic_prefix
        self._review = review_topic
        self._wake = asyncio.Event()
        self._dirty: set[Lane] = set()  # lanes that took readings since the last step
        # Where every lane's advisor keeps its rule state (set by the app); a lane added
        # later (an asset's learned model) keeps its state there too.
        self.rule_store: RuleStore | None = None
        self._replies: list[Outgoing] = []
        self._reply_log = RateLimited(10.0)
        self._reply_wake = asyncio.Event()
        self.last_reading_wall = 0.0

    # The shipped model's lane: what bundles replace and health reports.
    @property
    def shipped(self) -> Lane:
        """The lane of the shipped (or bundle-delivered) model."""
        return self.router.shipped

    @property
    def scorer(self) -> Scorer:
        """The shipped lane's scorer."""
        return self.router.shipped.scorer

    @property
    def advisor(self) -> Advisor:
        """The shipped lane's advisor."""
        return self.router.shipped.advisor

    @property
    def pending(self) -> int:
        """Windows waiting in every lane."""
        return sum(lane.pending for lane in self.router.lanes())

    @property
    def pressure(self) -> bool:
        """Whether degraded mode is engaged."""
        return self.router.pressure

    def ingest(self, readings: Sequence[Reading]) -> None:
        """Add a batch of readings; wakes the pipeline task when windows are ready."""
        if not readings:
            return
        if not self.router.profiled:  # no profiles: every reading to the shipped lane as is
            frames = self.router.shipped.frames
            frames.ingest(readings)
            if self.retention is not None:
                self.retention.ingest(readings)
            self.last_reading_wall = time.time()
            if frames.pending:
                self._wake.set()
            return
        kept, lanes = self.router.dispatch(readings)
        if self.retention is not None:
            self.retention.ingest(kept)
        self.last_reading_wall = time.time()
        self._dirty |= lanes
        if any(lane.pending for lane in lanes):
            self._wake.set()

    def add_learned(self, asset: str, lane: Lane, backlog: Sequence[Reading] = ()) -> None:
        """An asset's learned model is ready: it scores in `lane` from now on.

        `backlog` holds the asset's readings that arrived while it was fitted (already
        transformed and kept by retention): they go to the lane's frames first.
        """
        self.router.add_learned(asset, lane)
        if self.rule_store is not None:
            lane.advisor.keep_state(self.rule_store)
        if backlog:
            lane.frames.ingest(backlog)
            self._dirty.add(lane)
            if lane.pending:
                self._wake.set()

    def drop_learned(self, asset: str) -> None:
        """The asset learns again: its lane and its windows in flight go."""
        lane = self.router.drop_learned(asset)
        if lane is not None:
            self._dirty.discard(lane)

    def replace(self, lane: Lane) -> None:
        """Swap in a new model and rule pack for the shipped lane (bundle activation).

        The frames and the gate are kept when the new model reads the same grid; otherwise
        they restart.
        """
        old = self.router.shipped
        a, b = old.manifest, lane.manifest
        if (a.signals, a.rate_hz, a.window, a.hop) == (b.signals, b.rate_hz, b.window, b.hop):
            lane.frames, lane.gate = old.frames, old.gate
        else:
            log.warning("model reads another grid: frames restarted", model=b.version)
        lane.gate.pressure = self.router.pressure
        self.router.replace_shipped(lane)
        self._dirty.discard(old)

    def set_pressure(self, engaged: bool) -> None:
        """Degraded mode: the gates raise their bar and history digests thin out."""
        self.router.set_pressure(engaged)

    def answer_evidence_request(self, payload: bytes) -> None:
        """Queue the reply to an evidence request (called from the MQTT callback)."""
        if self.retention is None:
            return
        if len(self._replies) >= MAX_PENDING_REPLIES:
            # A flood of requests must not grow memory: the newest is refused and counted.
            metrics.EVIDENCE_REQUESTS_DROPPED.inc()
            if self._reply_log.allow("evidence_requests") is not None:
                log.warning("evidence request dropped: too many pending", max=MAX_PENDING_REPLIES)
            return
        self._replies.append(self.retention.handle_request(payload))
        self._reply_wake.set()

    async def run_retention(self) -> None:
        """Move evidence, digests and replies to the outbox until cancelled.

        Under pressure, digests are taken ten times less often (they are the lowest class).
        """
        ticks = 0
        while True:
            # Not wait_for: under 3.11 it swallows a cancellation that comes as the event
            # is set, and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETENTION_INTERVAL_S):
                    await self._reply_wake.wait()
            self._reply_wake.clear()
            ticks += 1
            await self._move_retention(digests=not self.pressure or ticks % 10 == 0)

    async def _move_retention(self, *, digests: bool) -> None:
        if digests:
            await self._flush_retention()
        msgs, self._replies = self._replies, []
        if self.retention is not None:
            msgs += self.retention.take_evidence()
            if digests:
                msgs += self.retention.take_digests()  # writes what came in during the slices
        if msgs:
            await self.outbox.put(msgs)

    async def _flush_retention(self) -> None:
        """Have retention write its unwritten readings in slices, at most half the loop's time."""
        retention = self.retention
        if retention is None:
            return
        began = time.monotonic()
        # Again for the assets that sent more meanwhile: take_digests, which writes the rest
        # in one go, then finds little.
        for _ in range(FLUSH_PASSES):
            assets = retention.unwritten_assets()
            for asset in assets:
                retention.flush(asset)
                worked = time.monotonic() - began
                if worked >= FLUSH_SLICE_S:
                    await asyncio.sleep(worked)
                    began = time.monotonic()
            if len(assets) <= 1:
                return

    async def flush(self) -> None:
        """At stop: score what is pending and hand evidence and digests to the outbox."""
        await self.step()
        await self._move_retention(digests=True)

    async def run(self) -> None:
        """Score windows as they become ready, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.step()

    async def step(self) -> int:
        """Score every lane's pending windows once; return how many recommendations it made."""
        lanes, self._dirty = self._dirty, set()
        lanes.add(self.router.shipped)
        recs: list[Recommendation] = []
        for lane in lanes:
            if lane.pending:
                recs += lane.step()
        if not recs:
            return 0
        if self.retention is not None:
            for rec in recs:
                if rec.kind == "raise":
                    ts = rec.payload.get("window_ts")
                    rec.payload["evidence_id"] = self.retention.trigger(
                        rec.asset,
                        float(ts) if isinstance(ts, int | float) else time.time(),
                        reason=str(rec.payload.get("rule_id", rec.kind)),
                        publish=rec.severity == "critical",
                    )
        out = [self._outgoing(r) for r in recs]
        if self.namespace is not None:
            out += self.namespace.messages(out)
        await self.outbox.put(out)
        for rec in recs:
            metrics.RECOMMENDATIONS.labels(rec.kind, rec.severity).inc()
            log.info(
                "recommendation",
                asset=rec.asset,
                kind=rec.kind,
                severity=rec.severity,
                id=rec.id,
            )
        return len(recs)

    def _outgoing(self, rec: Recommendation) -> Outgoing:
        review = rec.kind == "needs_review"
        return Outgoing(
            f"{self._prefix}/{self._review if review else 'recommendations'}/{rec.asset}",
            rec.to_json(),
            rec.id,
            key=rec.asset,
            priority=Priority.ESCALATION if review else Priority.RECOMMENDATION,
        )
