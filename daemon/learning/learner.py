"""The learner: every asset of a `learn` profile, from its first reading to its own model.

An asset that has no learned model records its rows (recorder.py) for its profile's
learning period; then its rows are written to the state directory and a worker process fits
them (fitter.py), at most `max_fits` at a time; the model is moved into place (store.py),
loaded into a lane of its own and handed to the pipeline, with the readings that arrived
during the fit. A fit that fails leaves the asset `failed` with the reason, until a
relearn. Learned models are loaded at start. The learner's task owns the fits, the file
work (in threads) and the state messages; `ingest` and `relearn` run in the event loop's
callbacks and only record and flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from edge_agent.core import metrics
from edge_agent.core.assets import AssetSettings, Profile
from edge_agent.core.errors import ConfigError, EdgeAgentError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Reading
from edge_agent.daemon.flow.lanes import Lane
from edge_agent.daemon.flow.settings import FrameSettings
from edge_agent.daemon.learning.fitter import FitLimits, run_fit
from edge_agent.daemon.learning.recorder import Recording
from edge_agent.daemon.learning.settings import LearningSettings
from edge_agent.daemon.learning.state import STATES, AssetState, state_message, state_topic
from edge_agent.daemon.learning.store import Store
from edge_agent.models.manifest import Manifest, load_manifest

log = structlog.get_logger(__name__)

MAX_HEALTH_ASSETS = 100  # assets listed by /health; the counts cover them all


class LaneHost(Protocol):
    """Where learned lanes go (the pipeline)."""

    def add_learned(self, asset: str, lane: Lane, backlog: Sequence[Reading] = ()) -> None:
        """The asset scores in `lane` from now on."""
        ...

    def drop_learned(self, asset: str) -> None:
        """The asset learns again."""
        ...


LaneFactory = Callable[[str, Profile, Manifest], Lane]  # blocking: loads the model
Publish = Callable[[list[Outgoing]], Awaitable[None]]


def rows_needed(profile: Profile) -> int:
    """Rows a `learn` profile records: its period at its rate."""
    return max(1, round(profile.learn_period_s * profile.rate_hz))


def check_profiles(assets: AssetSettings, settings: LearningSettings) -> None:
    """Refuse a `learn` profile whose period needs more rows than one asset may record."""
    for i, p in enumerate(assets.profiles):
        if p.learns and rows_needed(p) > settings.max_rows:
            raise ConfigError(
                f"EDGE_ASSETS__PROFILES[{i}] ({p.name}): learn_period_s={p.learn_period_s:g} at "
                f"rate_hz={p.rate_hz:g} is {rows_needed(p)} rows, more than "
                f"EDGE_LEARNING__MAX_ROWS={settings.max_rows}"
            )


@dataclass(eq=False)
class _Asset:
    profile: Profile
    state: AssetState
    recording: Recording | None = None
    backlog: deque[Reading] | None = None
    task: asyncio.Task[None] | None = None
    changed: bool = True  # publish at once
    moved: bool = False  # progress to publish when due
    published: float = -math.inf
    fitted: list[str] = field(default_factory=list)


class Learner:
    """Learning on the gateway for the assets of `learn` profiles."""

    def __init__(
        self,
        settings: LearningSettings,
        assets: AssetSettings,
        frames: FrameSettings,
        store: Store,
        *,
        prefix: str,
        build: LaneFactory,
        tflite: bool = False,
    ) -> None:
        check_profiles(assets, settings)
        self.settings = settings
        self.assets = assets
        self.store = store
        self._frames = frames
        self._prefix = prefix
        self._build = build
        self._limits = FitLimits(
            settings.fit_nice,
            settings.fit_memory_mb,
            settings.fit_timeout_s,
            "auto" if tflite else "off",
        )
        self._of: dict[str, _Asset] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.max_fits)
        self._building = asyncio.Lock()
        self._forget: set[str] = set()  # relearned assets whose files are still to go
        self._tasks: asyncio.TaskGroup | None = None
        self.host: LaneHost | None = None
        self.publish: Publish | None = None
        self._limit = RateLimited(60.0)
        self._dropped = {
            r: metrics.READINGS_DROPPED.labels(r)
            for r in ("learning_full", "learning_backlog", "learning_failed")
        }

    # --- in the event loop's callbacks: record and flag --------------------------------

    def ingest(self, asset: str, profile: Profile, readings: Sequence[Reading]) -> None:
        """Record a batch of a learning asset's readings (or hold them while it is fitted)."""
        entry = self._of.get(asset) or self._begin(asset, profile)
        if entry is None:
            self._drop("learning_full", len(readings), asset)
            return
        rec, state = entry.recording, entry.state
        if state.state == "failed":
            self._dropped["learning_failed"].inc(len(readings))
        elif state.stage == "recording" and rec is not None:
            rec.ingest(readings)
            state.progress, state.rows = rec.progress, rec.count
            metrics.LEARNING_PROGRESS.labels(asset).set(rec.progress)
            entry.moved = True
            if rec.complete:
                state.stage, state.progress = "queued", 0.0
                entry.backlog = deque(maxlen=self.settings.backlog_readings)
                # What came after the period's last row is the lane's, not the fit's.
                end = rec.last_ts if rec.last_ts is not None else -math.inf
                entry.backlog.extend(r for r in readings if r.ts > end)
                self._changed(entry)
                log.info("learning period recorded", asset=asset, rows=rec.count)
        elif entry.backlog is not None:
            over = len(entry.backlog) + len(readings) - self.settings.backlog_readings
            if over > 0:
                self._drop("learning_backlog", over, asset)
            entry.backlog.extend(readings)

    def relearn(self, asset: str) -> bool:
        """Forget the asset's learned model and learn again; False if it has no `learn` profile."""
        entry = self._of.get(asset)
        profile = entry.profile if entry is not None else self.assets.profile_of(asset)
        if profile is None or not profile.learns:
            log.warning("relearn ignored: the asset has no learn profile", asset=asset)
            return False
        if entry is not None and entry.task is not None and not entry.task.done():
            entry.task.cancel()
            metrics.FITS.labels("cancelled").inc()
        if self.host is not None:
            self.host.drop_learned(asset)
        self._of.pop(asset, None)
        self._forget.add(asset)  # on disk too, or a restart would load the old model
        self._begin(asset, profile)
        log.info(
            "relearn", asset=asset, profile=profile.name, learn_period_s=profile.learn_period_s
        )
        self._wake.set()
        return True

    def relearn_topic_name(self, name: str) -> bool:
        """Relearn the asset a topic level names (wildcard characters were made `_`)."""
        if name in self._of or self.assets.profile_of(name) is not None:
            return self.relearn(name)
        for asset in list(self._of):
            if state_topic("", asset) == state_topic("", name):
                return self.relearn(asset)
        return self.relearn(name)

    def _begin(self, asset: str, profile: Profile) -> _Asset | None:
        learning = sum(1 for e in self._of.values() if e.state.state == "learning")
        if learning >= self.settings.max_learning or len(self._of) >= self._frames.max_assets:
            return None
        need = rows_needed(profile)
        entry = _Asset(
            profile,
            AssetState(
                asset=asset,
                profile=profile.name,
                state="learning",
                stage="recording",
                progress=0.0,
                rows=0,
                rows_needed=need,
            ),
            Recording(profile, need, self._frames),
        )
        self._of[asset] = entry
        metrics.LEARNING_PROGRESS.labels(asset).set(0.0)
        self._changed(entry)
        log.info("learning", asset=asset, profile=profile.name, rows_needed=need)
        return entry

    def _changed(self, entry: _Asset) -> None:
        entry.changed = True
        self._count()
        self._wake.set()

    def _count(self) -> None:
        counts = dict.fromkeys(STATES, 0)
        for e in self._of.values():
            counts[e.state.state] += 1
        for state, n in counts.items():
            metrics.ASSETS.labels(state).set(n)

    def _drop(self, reason: str, n: int, asset: str) -> None:
        self._dropped[reason].inc(n)
        if (held := self._limit.allow(f"{reason}:{asset}")) is not None:
            log.warning("learning readings dropped", asset=asset, reason=reason, suppressed=held)

    # --- at start: the models learned before ---------------------------------------------

    def load(self) -> list[tuple[str, Lane]]:
        """Load every learned model kept in the state directory (blocking: at start)."""
        lanes: list[tuple[str, Lane]] = []
        for asset, path in self.store.learned():
            profile = self.assets.profile_of(asset)
            if profile is None or not profile.learns:
                log.warning("learned model not used: the asset has no learn profile", asset=asset)
                continue
            try:
                manifest = load_manifest(path)
                if tuple(manifest.signals) != profile.signal_names:
                    log.warning(
                        "learned model reads other signals than the profile: learning again",
                        asset=asset,
                        model=manifest.signals,
                        profile=profile.signal_names,
                    )
                    continue
                lane = self._build(asset, profile, manifest)
            except EdgeAgentError as exc:
                self._of[asset] = _Asset(
                    profile,
                    AssetState(
                        asset=asset,
                        profile=profile.name,
                        state="failed",
                        reason=f"the learned model cannot be loaded ({exc}); relearn the asset",
                    ),
                )
                log.error("learned model cannot be loaded", asset=asset, error=str(exc))  # noqa: TRY400
                continue
            self._of[asset] = _Asset(profile, self._scoring(asset, profile, manifest))
            metrics.LEARNING_PROGRESS.labels(asset).set(1.0)
            lanes.append((asset, lane))
        self._count()
        return lanes

    @staticmethod
    def _scoring(
        asset: str, profile: Profile, manifest: Manifest, warnings: Sequence[str] = ()
    ) -> AssetState:
        return AssetState(
            asset=asset,
            profile=profile.name,
            state="scoring",
            model=f"{manifest.name} {manifest.version}",
            warnings=list(warnings),
        )

    # --- the task --------------------------------------------------------------------------

    async def run(self) -> None:
        """Start fits as periods complete and publish states, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            try:
                while True:
                    # Not wait_for: under 3.11 it swallows a cancellation that comes as the event
                    # is set, and this loop would never stop.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.state_interval_s):
                            await self._wake.wait()
                    self._wake.clear()
                    await self._step(tg)
            finally:
                self._tasks = None
                for entry in self._of.values():
                    if entry.task is not None:
                        entry.task.cancel()

    async def _step(self, tg: asyncio.TaskGroup) -> None:
        while self._forget:
            await asyncio.to_thread(self.store.forget, self._forget.pop())
        for asset, entry in list(self._of.items()):
            if entry.state.stage == "queued" and entry.task is None:
                entry.task = tg.create_task(self._fit(asset, entry), name=f"fit-{asset}")
        await self.flush()

    async def flush(self) -> None:
        """Publish every state that changed, and progress that is due."""
        if self.publish is None:
            return
        now = time.monotonic()
        due: list[Outgoing] = []
        for entry in self._of.values():
            if entry.changed or (
                entry.moved and now - entry.published >= self.settings.state_interval_s
            ):
                entry.changed = entry.moved = False
                entry.published = now
                due.append(state_message(self._prefix, entry.state))
        if due:
            await self.publish(due)

    async def _fit(self, asset: str, entry: _Asset) -> None:
        try:
            async with self._slots:
                await self._fit_now(asset, entry)
        except asyncio.CancelledError:
            log.info("fit cancelled", asset=asset)
            raise
        except Exception as exc:  # a fault here must fail the asset, not the agent
            log.exception("learning failed", asset=asset)
            self._fail(asset, entry, f"{type(exc).__name__}: {exc}")

    async def _fit_now(self, asset: str, entry: _Asset) -> None:
        rec, state, profile = entry.recording, entry.state, entry.profile
        assert rec is not None
        state.stage, state.progress = "fitting", 0.0
        self._changed(entry)
        data = await asyncio.to_thread(
            self.store.write_recording,
            asset,
            rec.rows,
            signals=list(profile.signal_names),
            roles=[s.role for s in profile.signals],
            units=[s.unit for s in profile.signals],
            tolerance_pct=[
                math.nan if s.tolerance_pct is None else s.tolerance_pct for s in profile.signals
            ],
            rate_hz=profile.rate_hz,
            breaks=rec.breaks,
        )
        partial = await asyncio.to_thread(self.store.prepare_partial, asset)
        started = time.monotonic()

        def progress(fraction: float, _stage: str) -> None:
            state.progress = fraction
            entry.moved = True

        outcome = await run_fit(data, partial, self._limits, progress)
        if outcome.error is not None:
            self._fail(asset, entry, outcome.error)
            return
        # One lane built at a time: each is a thread's GIL-bound work beside the event loop.
        async with self._building:
            path = await asyncio.to_thread(self.store.install, asset)
            manifest = await asyncio.to_thread(load_manifest, path)
            lane = await asyncio.to_thread(self._build, asset, profile, manifest)
        backlog = list(entry.backlog or ())
        if self.host is not None:
            self.host.add_learned(asset, lane, backlog)
        entry.state = self._scoring(asset, profile, manifest, outcome.warnings)
        entry.recording, entry.backlog = None, None
        metrics.LEARNING_PROGRESS.labels(asset).set(1.0)
        metrics.FITS.labels("done").inc()
        self._changed(entry)
        log.info(
            "learned model scoring",
            asset=asset,
            model=manifest.name,
            fit_s=round(time.monotonic() - started, 2),
            backlog=len(backlog),
            warnings=outcome.warnings,
        )

    def _fail(self, asset: str, entry: _Asset, reason: str) -> None:
        entry.state = AssetState(
            asset=asset, profile=entry.profile.name, state="failed", reason=reason
        )
        entry.recording, entry.backlog = None, None
        metrics.FITS.labels("failed").inc()
        self._changed(entry)
        log.error("learning failed", asset=asset, reason=reason)

    # --- what health shows -----------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """Counts by state and, for the first assets, each one's state."""
        counts = dict.fromkeys(STATES, 0)
        listed: dict[str, object] = {}
        for asset, e in self._of.items():
            counts[e.state.state] += 1
            if len(listed) < MAX_HEALTH_ASSETS:
                listed[asset] = e.state.brief()
        return {"counts": counts, "assets": listed}

    def state_of(self, asset: str) -> AssetState | None:
        """One asset's state (None: not a learning asset)."""
        entry = self._of.get(asset)
        return None if entry is None else entry.state
