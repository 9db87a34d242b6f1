"""Fleet updates: jobs arrive on MQTT, bundles are verified, installed, proven or rolled back.

Job states follow the AWS IoT Jobs vocabulary and go, in order, to one retained topic per
gateway: QUEUED, IN_PROGRESS (step downloading, verifying, staging, probation), then one of
SUCCEEDED, FAILED (installed but did not prove itself: rolled back) or REJECTED (never
installed: signature, version, expiry, hashes, paths, compatibility). One job installs at a
time; a job id seen before is answered with its stored final state and not run again. Every
job whose id can be read ends in a reported state (jobs.py says how ids are read), and
nothing a candidate bundle does while it is checked escapes into the agent: a failure to
load or run its model is the job's FAILED state, never the agent's exception.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import msgspec
import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import BundleError, ConnectorError, EdgeAgentError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.bundles.build import model_input_of
from edge_agent.daemon.bundles.bundle import (
    Bundle,
    TrustedKeys,
    check_manifest,
    verify_bundle,
)
from edge_agent.daemon.bundles.fetch import DownloadError, Job, fetch
from edge_agent.daemon.bundles.jobs import Refusal, job_ref, oversize, parse_job, peek_job_id
from edge_agent.daemon.bundles.manifest import BundleRejectedError
from edge_agent.daemon.bundles.probation import ProbeLimits, check_bundle
from edge_agent.daemon.bundles.settings import UpdateSettings
from edge_agent.daemon.bundles.store import BundleStore, JobRecord, write_atomic
from edge_agent.models.settings import ModelSettings
from edge_agent.rules.settings import RuleSettings

log = structlog.get_logger(__name__)

Activate = Callable[[Bundle | None], Awaitable[None]]
_RETRY_DELAYS_S = (1.0, 4.0, 15.0)


class JobClient(Protocol):
    """What the service needs of an MQTT client (connectors.mqtt.MqttClient has it)."""

    def subscribe(
        self, topic_filter: str, qos: int, on_message: Callable[[str, bytes], None]
    ) -> None:
        """Subscribe now and after every reconnect."""

    async def publish(self, msg: Outgoing) -> None:
        """Publish and wait for the broker's acknowledgement."""


class JobState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One state report, as published on the retained state topic."""

    job_id: str
    status: str
    bundle_version: int
    gateway: str
    seq: int
    ts: float
    step: str = ""
    reason: str = ""
    active_version: int = 0  # the bundle serving after this state (0: the packaged default)


# Counted as scoring errors in probation: calls that raised, and backends that failed at run
# time (the scorer moves to the next backend, but a new model that breaks one is suspect).
_ERROR_SAMPLES = ("edge_scoring_errors_total", "edge_model_backend_failures_total")


def _scoring_errors() -> float:
    total = 0.0
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name in _ERROR_SAMPLES and sample.labels.get("stage", "run") == "run":
                total += sample.value
    return total


class _ProbationError(EdgeAgentError):
    """Installed bundle failed probation (internal: carries the reason to the report)."""


class _BundledSections(Protocol):
    """Settings that hold the sections a bundle replaces: the model and the rule packs."""

    @property
    def model(self) -> ModelSettings: ...

    @property
    def rules(self) -> RuleSettings: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with some fields replaced (pydantic's)."""
        ...


_S = TypeVar("_S", bound=_BundledSections)


def bundle_settings(settings: _S, bundle: Bundle | None) -> _S:
    """The settings with the model and rule packs taken from `bundle` (None: as configured)."""
    if bundle is None:
        return settings
    model = settings.model.model_copy(update={"manifest": bundle.model_manifest_path})
    rules = settings.rules.model_copy(update={"packs": bundle.rule_pack_paths})
    return settings.model_copy(update={"model": model, "rules": rules})


class UpdateService:
    """Runs as one task: receives jobs, installs one at a time, reports every state."""

    def __init__(
        self,
        settings: UpdateSettings,
        client: JobClient,
        state_dir: Path,
        gateway_id: str,
        activate: Activate,
        *,
        model_input: dict[str, Any] | None = None,
        check: Callable[[Bundle], object] | None = None,
    ) -> None:
        if settings.trusted_keys is None:
            raise BundleError("EDGE_UPDATES__TRUSTED_KEYS is empty: fleet updates are off")
        self.settings = settings
        self.keys = TrustedKeys.load(settings.trusted_keys)
        self.client = client
        self.store = BundleStore(state_dir)
        self.gateway = gateway_id
        self.activate = activate
        limits = ProbeLimits(settings.probe_timeout_s, settings.probe_memory_mb)
        self.check = check or partial(check_bundle, limits=limits)
        self.default_input = model_input
        self.state_topic = settings.state_topic.format(gateway=gateway_id)
        # Raw messages, parsed by the worker off the loop; oversize ones already refused.
        self._queue: asyncio.Queue[bytes | Refusal] = asyncio.Queue(settings.max_pending_jobs)
        self._busy: deque[str] = deque()  # jobs dropped for a full queue, still to be told
        self._limited = RateLimited(10.0)
        self._seq = 0
        self.subscribed = asyncio.Event()  # set once the job topics are subscribed

    def topics(self) -> list[str]:
        """The job topics this gateway listens on."""
        mine = [self.settings.gateway_topic.format(gateway=self.gateway)]
        return mine + [self.settings.group_topic.format(group=g) for g in self.settings.groups]

    # --- intake ---------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes) -> None:
        item: bytes | Refusal = payload
        if len(payload) > self.settings.max_job_bytes:
            # Never parsed: its id is read from the first KiB, else named after its hash.
            item = oversize(payload, self.settings.max_job_bytes)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            peeked = peek_job_id(payload) if isinstance(item, bytes) else item.job_id
            ref = job_ref(peeked) if peeked is not None else None
            self._refuse("queue_full", f"job {ref} on {topic} (EDGE_UPDATES__MAX_PENDING_JOBS)")
            if ref is not None and len(self._busy) < self.settings.max_pending_jobs:
                self._busy.append(ref)

    def _refuse(self, reason: str, detail: str) -> None:
        # No job id to report against (or no room): counted and logged, nothing published.
        metrics.UPDATE_JOBS.labels(status="dropped", reason=reason).inc()
        held = self._limited.allow(reason)
        if held is not None:
            log.warning("update_job_dropped", reason=reason, detail=detail, suppressed=held)

    # --- reporting ------------------------------------------------------------------------

    def _active_version(self) -> int:
        # Manifest only: a state report must not re-hash the whole bundle.
        return self.store.current_version()

    async def _report(self, job_id: str, version: int, status: str, **extra: str) -> None:
        # Microseconds since the epoch, strictly increasing: ordered across restarts too.
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        state = JobState(
            job_id=job_id,
            status=status,
            bundle_version=version,
            gateway=self.gateway,
            seq=self._seq,
            ts=time.time(),
            active_version=self._active_version(),
            **extra,
        )
        log.info("update_job_state", job_id=job_id, status=status, **extra)
        await self.client.publish(
            Outgoing(
                topic=self.state_topic,
                payload=msgspec.json.encode(state),
                msg_id=new_id(),
                priority=Priority.STATUS,
                qos=self.settings.qos,
                retain=True,
            )
        )

    async def _report_final(self, rec: JobRecord) -> None:
        extra = {"reason": rec.reason} if rec.reason else {}
        await self._report(rec.job_id, rec.version, rec.status, **extra)
        self.store.mark_reported(rec)

    # --- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Recover, report what a restart left unsaid, resume, then serve jobs until cancelled."""
        if self.store.recover() is not None:
            # A restart interrupted a probation and the link went back: if the agent started
            # on the unproven bundle (it read `current` before recovery), switch it back too.
            await self.activate(self.store.current())
        resumed = self._resumable()
        for rec in self.store.unreported():
            await self._report_final(rec)
        for topic in self.topics():
            self.client.subscribe(topic, self.settings.qos, self._on_message)
        self.subscribed.set()
        if resumed is not None:
            await self._handle(resumed, resumed_job=True)
        while True:
            item = await self._queue.get()
            try:
                await self._serve(item)
            except ConnectorError:
                raise  # the uplink is closing: the journal finishes the job after the restart
            except Exception:  # a fault of ours must not end fleet updates, nor the agent
                metrics.UPDATE_JOBS.labels(status="dropped", reason="internal").inc()
                log.exception("update_job_internal_error")
            while self._busy:
                # Not stored as final: the same job published again is run then.
                await self._report(
                    self._busy.popleft(),
                    0,
                    "REJECTED",
                    reason="queue_full: too many jobs were waiting "
                    "(EDGE_UPDATES__MAX_PENDING_JOBS); publish it again",
                )

    async def _serve(self, item: bytes | Refusal) -> None:
        parsed = await asyncio.to_thread(parse_job, item) if isinstance(item, bytes) else item
        if parsed is None:
            self._refuse("invalid", f"a job message without a readable job_id: {item[:80]!r}")
        elif isinstance(parsed, Refusal):
            await self._reject(parsed)
        else:
            await self._handle(parsed)

    async def _reject(self, bad: Refusal) -> None:
        try:
            done = self.store.record(bad.job_id)  # the reference is a safe name by construction
        except (BundleError, OSError, msgspec.DecodeError) as exc:
            self._refuse("invalid", f"job {bad.job_id}: its stored record: {exc}")
            return
        if done is not None:  # a job id that already ended is not reopened by garbage
            await self._report_final(done)
            return
        metrics.UPDATE_JOBS.labels(status="REJECTED", reason=bad.reason.split(":")[0]).inc()
        log.warning("update_rejected", job_id=bad.job_id, reason=bad.reason)
        rec = JobRecord(bad.job_id, bad.version, "REJECTED", bad.reason)
        self.store.finish(rec)
        await self._report_final(rec)

    def _job_file(self, job_id: str) -> Path:
        return self.store.incoming(job_id).with_name(f"{job_id}.job.json")

    def _resumable(self) -> Job | None:
        journal = self.store.journal()
        if journal is None:
            return None
        path = self._job_file(journal.job_id)
        try:
            job = parse_job(path.read_bytes())  # the same rules as a job arriving now
        except OSError as exc:
            job = Refusal(journal.job_id, journal.version, str(exc))
        if isinstance(job, Job):
            return job
        why = job.reason if job is not None else "unreadable"
        log.warning("update_job_not_resumable", job_id=journal.job_id, error=why)
        self.store.finish(
            JobRecord(journal.job_id, journal.version, "FAILED", "interrupted; not resumable")
        )
        self.store.clear_incoming(journal.job_id)
        return None

    async def _handle(self, job: Job, *, resumed_job: bool = False) -> None:
        try:
            done = self.store.record(job.job_id)
        except (BundleError, OSError, msgspec.DecodeError) as exc:
            self._refuse("invalid", f"job id {job.job_id!r}: {exc}")
            return
        if done is not None:
            metrics.UPDATE_JOBS.labels(status="duplicate", reason="").inc()
            log.info("update_job_duplicate", job_id=job.job_id, status=done.status)
            await self._report_final(done)
            return
        # A ConnectorError (the uplink closing) propagates: the journal finishes the job later.
        rec = await self._install(job, resumed_job=resumed_job)
        metrics.UPDATE_JOBS.labels(status=rec.status, reason=rec.reason.split(":")[0]).inc()
        self.store.finish(rec)
        self.store.collect()
        self.store.clear_incoming(job.job_id)
        self._job_file(job.job_id).unlink(missing_ok=True)
        await self._report_final(rec)

    def _expected_input(self) -> dict[str, Any] | None:
        current = self.store.current()
        if current is not None:
            return current.model_input
        if self.default_input is None:
            # No bundle yet and none given: the model shipped with the agent is what runs.
            try:
                self.default_input = model_input_of(None)
            except EdgeAgentError as exc:
                raise BundleError(f"the running model's input schema is unknown: {exc}") from exc
        return self.default_input

    async def _install(self, job: Job, *, resumed_job: bool) -> JobRecord:
        version = job.manifest.version
        step = "verifying"
        if not resumed_job:
            await self._report(job.job_id, version, "QUEUED")
        try:
            # Cheap checks first, on the manifest alone: nothing is fetched for a bundle that
            # is too large, unsigned, stale, old or incompatible.
            check_manifest(
                job.manifest,
                self.keys,
                highest=self.store.highest,
                model_input=self._expected_input(),
                max_bundle_bytes=self.settings.max_bundle_bytes,
            )
            step = "downloading"
            # The job first, then the journal that points to it: a restart can always resume.
            write_atomic(self._job_file(job.job_id), msgspec.json.encode(job))
            self.store.begin(job.job_id, version, step)
            await self._report(job.job_id, version, "IN_PROGRESS", step=step)
            incoming = self.store.incoming(job.job_id)
            await self._download(job, incoming)
            step = "verifying"
            self.store.begin(job.job_id, version, step)
            await self._report(job.job_id, version, "IN_PROGRESS", step=step)
            await asyncio.to_thread(
                verify_bundle,
                incoming,
                self.keys,
                highest=self.store.highest,
                model_input=self._expected_input(),
                max_bundle_bytes=self.settings.max_bundle_bytes,
            )
            step = "staging"
            self.store.begin(job.job_id, version, step)
            await self._report(job.job_id, version, "IN_PROGRESS", step=step)
            staged = await asyncio.to_thread(self.store.stage, incoming, job.manifest)
        except BundleRejectedError as exc:
            log.warning("update_rejected", job_id=job.job_id, reason=exc.reason, detail=exc.detail)
            return JobRecord(job.job_id, version, "REJECTED", str(exc))
        except (BundleError, OSError) as exc:
            log.exception("update_failed", job_id=job.job_id, step=step)
            return JobRecord(job.job_id, version, "FAILED", f"{step}: {exc}")
        except ConnectorError:
            raise  # the uplink is closing: the journal finishes the job after the restart
        except Exception as exc:  # a fault of ours: the job says so, the agent lives on
            log.exception("update_failed", job_id=job.job_id, step=step)
            return JobRecord(job.job_id, version, "FAILED", f"{step}: {type(exc).__name__}: {exc}")
        try:
            await self._probation(job, Bundle(staged, job.manifest))
        except _ProbationError as exc:
            return JobRecord(job.job_id, version, "FAILED", f"probation: {exc}")
        return JobRecord(job.job_id, version, "SUCCEEDED")

    async def _download(self, job: Job, incoming: Path) -> None:
        for attempt, delay in enumerate((*_RETRY_DELAYS_S, None), 1):
            try:
                await asyncio.to_thread(fetch, job, incoming, self.settings.download_timeout_s)
            except DownloadError as exc:
                if delay is None:
                    raise
                # The files fetched so far stay: the next attempt continues where this stopped.
                log.warning(
                    "update_download_retry", job_id=job.job_id, attempt=attempt, error=str(exc)
                )
                await asyncio.sleep(delay)
            else:
                return

    async def _probation(self, job: Job, bundle: Bundle) -> None:
        journal = self.store.journal()
        previous = journal.previous if journal is not None else None
        self.store.begin(job.job_id, bundle.version, "probation")
        self.store.swap(bundle.path, bundle.version)
        # Reported once `current` is swapped: from here a restart means a failed probation.
        await self._report(job.job_id, bundle.version, "IN_PROGRESS", step="probation")
        errors_before = _scoring_errors()
        try:
            await asyncio.to_thread(self.check, bundle)
            await self.activate(bundle)
            await self._watch(errors_before)
        # The candidate's model meets third-party runtimes, which raise types of their own
        # (onnxruntime's InvalidProtobuf is a bare Exception): any of them fails the bundle.
        except Exception as exc:
            log.exception("update_probation_failed", job_id=job.job_id)
            self.store.rollback(previous)
            back = self.store.current()
            try:
                await self.activate(back)
            except Exception:
                # The old bundle served a moment ago; if it cannot come back, say so loudly.
                log.exception("update_rollback_activate_failed", to=previous)
                metrics.BUNDLE_EVENTS.labels(event="rollback_activate_failed").inc()
            detail = str(exc) if isinstance(exc, EdgeAgentError) else f"{type(exc).__name__}: {exc}"
            raise _ProbationError(detail) from exc

    async def _watch(self, errors_before: float) -> None:
        deadline = time.monotonic() + self.settings.probation_s
        while True:
            errors = _scoring_errors() - errors_before
            if errors > 0:
                raise BundleError(f"{errors:.0f} scoring errors during probation")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.5))
