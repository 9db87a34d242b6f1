"""The flow of a reading: frames -> gate -> scorer -> advisor -> outbox.

One task owns the pipeline; sources hand it batches of readings with `ingest` (no queue, no
thread hop: the frames are updated in the source's own callback turn) and it wakes to score
whatever windows are complete, in one batch across all assets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, Reading, WindowResult
from edge_agent.daemon.flow.frames import FrameBuilder
from edge_agent.daemon.flow.gate import Gate
from edge_agent.daemon.flow.stats import window_stats

if TYPE_CHECKING:
    from edge_agent.daemon.flow.frames import Window
    from edge_agent.daemon.outbox.queue import Outbox
    from edge_agent.models.scorer import Scorer
    from edge_agent.rules.engine import Advisor, Recommendation

log = structlog.get_logger(__name__)

RETENTION_INTERVAL_S = 1.0  # how often evidence and digests move to the outbox
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


class Namespace(Protocol):
    """Where recommendations also go: the Unified Namespace (`connectors.uns.Namespace`)."""

    def messages(self, recommendations: Sequence[Outgoing]) -> list[Outgoing]:
        """The namespace's messages for these recommendation messages."""
        ...


class Pipeline:
    """Turns readings into recommendations in the outbox."""

    def __init__(
        self,
        *,
        frames: FrameBuilder,
        gate: Gate,
        scorer: Scorer,
        advisor: Advisor,
        outbox: Outbox,
        topic_prefix: str,
        review_topic: str = "needs_review",
        retention: Retention | None = None,
    ) -> None:
        self.frames = frames
        self.gate = gate
        self.scorer = scorer
        self.advisor = advisor
        self.outbox = outbox
        self.retention = retention
        self.namespace: Namespace | None = None  # the Unified Namespace (EDGE_UNS), set by the app
        self._prefix = topic_prefix
        self._review = review_topic
        self._wake = asyncio.Event()
        self._replies: list[Outgoing] = []
        self._reply_log = RateLimited(10.0)
        self._reply_wake = asyncio.Event()
        self.last_reading_wall = 0.0

    def ingest(self, readings: Sequence[Reading]) -> None:
        """Add a batch of readings; wakes the pipeline task when windows are ready."""
        if not readings:
            return
        self.frames.ingest(readings)
        if self.retention is not None:
            self.retention.ingest(readings)
        self.last_reading_wall = time.time()
        if self.frames.pending:
            self._wake.set()

    def replace(self, scorer: Scorer, advisor: Advisor) -> None:
        """Swap in a new model and rule pack (bundle activation) between two batches.

        Frames are kept when the new model reads the same grid; otherwise they restart.
        """
        old, new = self.scorer.manifest, scorer.manifest
        if (old.signals, old.rate_hz, old.window, old.hop) != (
            new.signals,
            new.rate_hz,
            new.window,
            new.hop,
        ):
            self.frames = FrameBuilder(
                new.signals, new.rate_hz, new.window, new.hop, self.frames.settings
            )
            self.gate = Gate(self.gate.settings, len(new.signals))
            log.warning("model reads another grid: frames restarted", model=new.version)
        self.scorer = scorer
        self.advisor = advisor

    def set_pressure(self, engaged: bool) -> None:
        """Degraded mode: the gate raises its bar and history digests thin out."""
        self.gate.pressure = engaged

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reply_wake.wait(), RETENTION_INTERVAL_S)
            self._reply_wake.clear()
            ticks += 1
            await self._move_retention(digests=not self.gate.pressure or ticks % 10 == 0)

    async def _move_retention(self, *, digests: bool) -> None:
        msgs, self._replies = self._replies, []
        if self.retention is not None:
            msgs += self.retention.take_evidence()
            if digests:
                msgs += self.retention.take_digests()
        if msgs:
            await self.outbox.put(msgs)

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
        """Score every pending window once; return how many recommendations it produced."""
        backlog = self.frames.pending
        windows = self.frames.take()
        chosen = self.gate.select(windows, backlog)
        if not chosen:
            return 0
        results = self._score(chosen)
        recs = self.advisor.evaluate(results)
        if recs and self.retention is not None:
            for rec in recs:
                if rec.kind == "raise":
                    ts = rec.payload.get("window_ts")
                    rec.payload["evidence_id"] = self.retention.trigger(
                        rec.asset,
                        float(ts) if isinstance(ts, int | float) else time.time(),
                        reason=str(rec.payload.get("rule_id", rec.kind)),
                        publish=rec.severity == "critical",
                    )
        if recs:
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

    def _score(self, windows: Sequence[Window]) -> list[WindowResult]:
        manifest = self.scorer.manifest
        signals = manifest.signals
        x = np.stack([w.values for w in windows])
        out = self.scorer.score(x)
        stats = window_stats(x, signals, manifest.rate_hz, self.gate.baselines(windows))
        scores = out.score.tolist()
        contrib = out.contrib.tolist()
        probs = out.probs.tolist()
        classes = manifest.classes
        threshold = self.scorer.threshold  # each artifact has its own calibration
        results = [
            WindowResult(
                w.asset,
                w.ts,
                scores[i],
                threshold,
                dict(zip(signals, contrib[i], strict=True)),
                dict(zip(classes, probs[i], strict=True)),
                stats[i],
            )
            for i, w in enumerate(windows)
        ]
        self.gate.learn(windows, [not r.anomalous for r in results])
        metrics.WINDOWS.labels("scored").inc(len(windows))
        return results

    def _outgoing(self, rec: Recommendation) -> Outgoing:
        review = rec.kind == "needs_review"
        return Outgoing(
            f"{self._prefix}/{self._review if review else 'recommendations'}/{rec.asset}",
            rec.to_json(),
            rec.id,
            key=rec.asset,
            priority=Priority.ESCALATION if review else Priority.RECOMMENDATION,
        )
