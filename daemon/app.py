"""The agent process: one event loop, one supervision tree, an ordered shutdown."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import msgspec
import structlog

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.registry import open_source
from edge_agent.connectors.uns import open_namespace
from edge_agent.connectors.uplink import MqttSink, uplink_client, uplink_prefix
from edge_agent.core import metrics
from edge_agent.core.errors import EdgeAgentError
from edge_agent.daemon.flow.lanes import Lane, build_lane, profile_lanes
from edge_agent.daemon.flow.pipeline import Pipeline
from edge_agent.daemon.flow.routing import Router
from edge_agent.daemon.learning.wiring import build_learner, subscribe_relearn
from edge_agent.daemon.outbox.queue import open_outbox
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.service.http import Health, HttpEndpoint
from edge_agent.daemon.service.notify import Notifier, install_debug_stall
from edge_agent.daemon.service.pressure import Pressure
from edge_agent.daemon.service.stopping import stop_handler, wait_or_stop
from edge_agent.daemon.web.journal import Journal
from edge_agent.daemon.web.observer import LiveState
from edge_agent.daemon.web.page import WebApp
from edge_agent.daemon.web.watch import ObservedOutbox, watch_lanes
from edge_agent.models.manifest import load_manifest
from edge_agent.rules.state import RuleStore

if TYPE_CHECKING:
    from edge_agent.core.ports import Sink, Source
    from edge_agent.daemon.bundles.bundle import Bundle
    from edge_agent.daemon.settings import Settings

log = structlog.get_logger(__name__)


def gateway_id(settings: Settings) -> str:
    """The gateway's name: the setting, else the host name."""
    return settings.agent.gateway_id or socket.gethostname()


def topic_prefix(settings: Settings) -> str:
    """The uplink topic prefix with the gateway filled in."""
    return uplink_prefix(settings.uplink, gateway_id(settings))


def build_shipped_lane(settings: Settings) -> Lane:
    """Load and verify the shipped (or bundle's) model and rule packs (blocking)."""
    manifest = load_manifest(settings.model.manifest)
    return build_lane(
        "shipped", manifest, settings, gateway_id=gateway_id(settings), packs=settings.rules.packs
    )


def build_pipeline(
    settings: Settings, retention: Retention | None = None, shipped: Lane | None = None
) -> Pipeline:
    """Assemble the pipeline: the shipped lane, the profiles' lanes, the outbox (blocking)."""
    shipped = shipped or build_shipped_lane(settings)
    try:
        settings.agent.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # each part that writes there degrades on its own, and says so
        log.error("state directory unusable", setting="EDGE_AGENT__STATE_DIR", error=str(exc))  # noqa: TRY400
    pipeline = Pipeline(
        router=Router(
            settings.assets,
            shipped,
            profile_lanes(settings, gateway_id(settings), shipped.manifest),
        ),
        outbox=open_outbox(settings.outbox, settings.agent.state_dir),
        topic_prefix=topic_prefix(settings),
        review_topic=settings.rules.review_topic,
        retention=retention,
    )
    pipeline.namespace = open_namespace(settings.uns, gateway_id(settings))
    return pipeline


def _with_bundle(settings: Settings, bundle: Bundle | None) -> Settings:
    """The settings with the model and rule packs of `bundle` (None: as configured)."""
    if bundle is None:
        return settings
    from edge_agent.daemon.bundles.updates import bundle_settings  # noqa: PLC0415

    return bundle_settings(settings, bundle)


class Agent:
    """The running parts of one agent, reachable for bundle activation, reload and health."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway = gateway_id(settings)
        self.bundle: Bundle | None = None
        if settings.updates.trusted_keys is not None:
            # Bundles (and cryptography, ~9 MB) are imported only when updates are configured.
            from edge_agent.daemon.bundles.bundle import TrustedKeys  # noqa: PLC0415
            from edge_agent.daemon.bundles.store import active_bundle  # noqa: PLC0415

            keys = TrustedKeys.load(settings.updates.trusted_keys)
            # Recovers an install interrupted by a crash first, so we never start on a bundle
            # that did not finish its probation.
            self.bundle = active_bundle(settings.agent.state_dir, keys)
        self.retention = Retention.from_settings(settings, self.gateway)
        self.pipeline = build_pipeline(_with_bundle(settings, self.bundle), self.retention)
        self.rule_store = RuleStore(settings.agent.state_dir, settings.rules.max_assets)
        self._keep_state()
        self.learner = build_learner(settings, self.pipeline, topic_prefix(settings), self.gateway)
        self.ready = False  # start-up is over (READY=1 sent)
        self.uplink: MqttClient | None = None
        self.sources: list[Source] = []
        self.live: LiveState | None = None
        self.web: WebApp | None = None
        if settings.service.http_enabled:
            self._watch()

    def _watch(self) -> None:
        """Feed the page: the scored windows and what goes into the outbox."""
        manifest = self.pipeline.scorer.manifest
        journal = Journal(self.settings.agent.state_dir)
        self.live = LiveState(journal, window_s=manifest.window / manifest.rate_hz)
        self.pipeline.outbox = ObservedOutbox(self.pipeline.outbox, self.live)
        self._watch_lanes()
        self.web = WebApp(
            self.live,
            serving=self.serving,
            facts=self.facts,
            evidence=self.retention.get,
            journal=journal,
            reading_age=lambda: self.health().last_reading_age_s,
            learning=self._learning,
        )

    def _watch_lanes(self) -> None:
        """Tap every lane's scored windows (lanes learned since the last call too)."""
        if self.live is not None:
            watch_lanes(self.pipeline.router.lanes(), self.live)

    def _learning(self) -> dict[str, str]:
        """Assets that are learning or failed to learn, and why (for the page)."""
        if self.learner is None:
            return {}
        out: dict[str, str] = {}
        assets = self.learner.health().get("assets")
        for asset, brief in (assets if isinstance(assets, dict) else {}).items():
            state = brief.get("state") if isinstance(brief, dict) else None
            if state in ("learning", "failed"):
                out[str(asset)] = " ".join(
                    f"{k} {v}" for k, v in brief.items() if k != "state"
                ) or str(state)
        return out

    def serving(self, asset: str) -> dict[str, object]:
        """The model and rule pack serving an asset (its lane's)."""
        self._watch_lanes()  # a learned lane may have come since
        lane = self.pipeline.router.route(asset).lane
        if lane is None:
            return {"model": None, "rules": None}
        manifest, pack = lane.manifest, lane.advisor.pack
        return {
            "model": {"name": manifest.name, "version": manifest.version},
            "rules": {"name": pack.name, "version": pack.version},
        }

    def facts(self) -> dict[str, object]:
        """What the page shows besides the assets: the gateway, its links, outbox, bundle."""
        return {
            "gateway": self.gateway,
            "health": msgspec.to_builtins(self.health()),
            "bundle": self.bundle.version if self.bundle else "shipped",
        }

    # --- bundles and reload --------------------------------------------------------------

    async def activate(self, bundle: Bundle | None) -> None:
        """Swap in the model and rules of `bundle` (None: the shipped ones) without a restart."""
        effective = _with_bundle(self.settings, bundle)
        lane = await asyncio.to_thread(build_shipped_lane, effective)
        self.pipeline.replace(lane)
        self._keep_state()
        self._watch_lanes()
        self.bundle = bundle
        log.info(
            "bundle activated",
            bundle=bundle.version if bundle else "shipped",
            model=lane.manifest.version,
            rules=lane.advisor.pack.version,
        )

    def _keep_state(self) -> None:
        """Every lane's advisor keeps its rule state on disk; retention keeps what is read."""
        self.pipeline.rule_store = self.rule_store
        lanes = self.pipeline.router.lanes()
        for lane in lanes:
            lane.advisor.keep_state(self.rule_store)
        read = {s for lane in lanes for s in lane.manifest.signals}
        read |= {s for p in self.settings.assets.profiles for s in p.signal_names}
        self.retention.keep_signals(sorted(read))

    def reload_rules(self) -> None:
        """SIGHUP: re-read every lane's rule packs; an invalid pack is logged, the old one kept."""
        for lane in self.pipeline.router.lanes():
            try:
                lane.reload_rules()
            except EdgeAgentError as exc:
                metrics.RELOADS.labels("rejected").inc()
                log.error(  # noqa: TRY400
                    "rule pack reload rejected, the old pack keeps running",
                    lane=lane.name,
                    errors=str(exc),
                )
            else:
                metrics.RELOADS.labels("applied").inc()

    # --- tasks (they read self.pipeline each time: activation may replace its parts) -------

    async def feed(self, source: Source) -> None:
        """Hand every batch of a source to the pipeline."""
        async for batch in source.batches():
            self.pipeline.ingest(batch)

    async def run_pipeline(self) -> None:
        """Score windows as they become ready."""
        await self.pipeline.run()

    async def deliver(self, sink: Sink) -> None:
        """Deliver the outbox through the uplink."""
        await self.pipeline.outbox.deliver(sink)

    # --- health ----------------------------------------------------------------------------

    def links(self) -> dict[str, bool]:
        """Whether each link is up: the uplink's, then every configured source's."""
        up = {} if self.uplink is None else {self.uplink.name: self.uplink.connected.is_set()}
        return up | {s.name: s.connected.is_set() for s in self.sources}

    def health(self) -> Health:
        """What /health reports: ready once started while every source's link is up."""
        last = self.pipeline.last_reading_wall
        return Health(
            ready=self.ready and all(s.connected.is_set() for s in self.sources),
            connected=self.links(),
            last_reading_age_s=round(time.time() - last, 3) if last else None,
            outbox_depth=self.pipeline.outbox.depth(),
            outbox_store=self.pipeline.outbox.status(),
            backend=self.pipeline.scorer.backend_name,
            degraded=self.pipeline.pressure,
            learning=self.learner.health() if self.learner is not None else None,
        )

    def status_line(self) -> str:
        """One line for systemd's STATUS=."""
        self._watch_lanes()  # every status interval: lanes learned since are tapped too
        h = self.health()
        links = " ".join(f"{k}={'up' if v else 'down'}" for k, v in h.connected.items())
        degraded = " DEGRADED" if h.degraded else ""
        store = "" if h.outbox_store == "disk" else f" OUTBOX IN {h.outbox_store.upper()}"
        return (
            f"{links} backend={h.backend} outbox={h.outbox_depth} "
            f"last_reading_age={h.last_reading_age_s}s{degraded}{store}"
        )


async def _drain(agent: Agent) -> None:
    # Only while the uplink is up: down, there is nothing to wait for (the file keeps it).
    up = agent.uplink.connected if agent.uplink is not None else asyncio.Event()
    while agent.pipeline.outbox.depth() and up.is_set():  # noqa: ASYNC110 - bounded, at stop
        await asyncio.sleep(0.05)


def _signal_handlers(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, reload: Callable[[], None], limit: float
) -> list[int]:
    loop.add_signal_handler(signal.SIGTERM, stop_handler(loop, stop, limit))
    loop.add_signal_handler(signal.SIGINT, stop_handler(loop, stop, limit))
    loop.add_signal_handler(signal.SIGHUP, reload)
    return [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


async def _connect(agent: Agent, stack: AsyncExitStack) -> MqttClient:
    """Open the uplink and the configured sources; each reconnects on its own."""
    settings = agent.settings
    await stack.enter_async_context(HttpEndpoint(settings.service, agent.health, agent.web))
    uplink = await stack.enter_async_context(uplink_client(settings, agent.gateway))
    agent.uplink = uplink
    for name in dict.fromkeys(settings.agent.sources):
        source = open_source(name, settings, agent.gateway)
        agent.sources.append(await stack.enter_async_context(source))
    uplink.subscribe(
        agent.retention.request_topic,
        1,
        lambda _t, payload: agent.pipeline.answer_evidence_request(payload),
    )
    if agent.learner is not None:
        subscribe_relearn(uplink, agent.learner, topic_prefix(settings))
    return uplink


def _background(
    tg: asyncio.TaskGroup,
    agent: Agent,
    uplink: MqttClient,
    notifier: Notifier,
    pressure: Pressure,
) -> list[asyncio.Task[None]]:
    """Start the agent's long-running tasks other than intake and delivery."""
    settings = agent.settings
    tasks = [
        tg.create_task(agent.run_pipeline(), name="pipeline"),
        tg.create_task(agent.pipeline.run_retention(), name="retention"),
        tg.create_task(pressure.run(), name="pressure"),
        tg.create_task(
            agent.learner.run() if agent.learner is not None else asyncio.sleep(0),
            name="learning",
        ),
        tg.create_task(
            notifier.run_watchdog(settings.service.watchdog_ratio)
            if settings.service.watchdog
            else asyncio.sleep(0),
            name="watchdog",
        ),
        tg.create_task(
            notifier.run_status(agent.status_line, settings.service.status_interval_s),
            name="status",
        ),
    ]
    if settings.updates.trusted_keys is not None:
        from edge_agent.daemon.bundles.build import model_input_of  # noqa: PLC0415
        from edge_agent.daemon.bundles.updates import UpdateService  # noqa: PLC0415

        updates = UpdateService(
            settings.updates,
            uplink,
            settings.agent.state_dir,
            agent.gateway,
            agent.activate,
            model_input=model_input_of(settings.model.manifest),
        )
        tasks.append(tg.create_task(updates.run(), name="updates"))
    return tasks


async def run_agent(
    settings: Settings, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
) -> None:
    """Run the agent until `stop` is set or SIGTERM/SIGINT arrives, then stop in order.

    `ready` (if given) is set when systemd would be told READY=1.

    Shutdown order: stop intake, score the windows in flight into the outbox, give the
    outbox `shutdown_timeout_s` to deliver, publish `offline`, disconnect. What is not
    delivered stays in the outbox for the next start.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    structlog.contextvars.bind_contextvars(gateway=gateway_id(settings))
    notifier = Notifier()
    agent = await asyncio.to_thread(Agent, settings)
    order, why = settings.model.backend_order()
    log.info(
        "model loaded",
        backends=order,
        backends_chosen_by=why,
        model=agent.pipeline.scorer.manifest.name,
        version=agent.pipeline.scorer.manifest.version,
        backend=agent.pipeline.scorer.backend_name,
        bundle=agent.bundle.version if agent.bundle else "shipped",
    )
    handled = _signal_handlers(loop, stop, agent.reload_rules, settings.agent.shutdown_timeout_s)
    if install_debug_stall(loop, settings.service.debug_stall_s):
        handled.append(signal.SIGUSR2)
    pressure = Pressure(settings.service, backlog=lambda: agent.pipeline.pending)
    pressure.subscribe(agent.pipeline.set_pressure)
    try:
        async with AsyncExitStack() as stack:
            uplink = await _connect(agent, stack)
            # READY once the uplink and every source are connected and their subscriptions
            # acknowledged, or after connect_timeout_s of retrying (the connectors keep
            # retrying; a gateway must not restart-loop on a dead broker or server).
            await wait_or_stop(
                asyncio.gather(uplink.wait_subscribed(), *(s.wait_ready() for s in agent.sources)),
                stop,
                settings.mqtt.connect_timeout_s,
            )
            async with asyncio.TaskGroup() as tg:
                intake = [
                    tg.create_task(agent.feed(s), name=f"ingest-{i}")
                    for i, s in enumerate(agent.sources)
                ]
                background = _background(tg, agent, uplink, notifier, pressure)
                delivery = tg.create_task(agent.deliver(MqttSink(uplink)), name="outbox")
                agent.ready = True
                # What start-up made (modules, model, packs, settings) lives as long as the
                # process: out of the collector's sight, a collection walks only what the
                # flow makes (bench outbox: 283 -> 8 ms of collections per 30,000 messages).
                gc.freeze()
                notifier.ready(agent.status_line())
                if ready is not None:
                    ready.set()
                log.info("agent running", sources=settings.agent.sources)
                await stop.wait()
                notifier.stopping()
                log.info("stopping", timeout_s=settings.agent.shutdown_timeout_s)
                for task in (*intake, *background):
                    task.cancel()
                await agent.pipeline.flush()  # windows already cut and evidence go out
                try:
                    await asyncio.wait_for(_drain(agent), settings.agent.shutdown_timeout_s)
                except TimeoutError:
                    log.warning("outbox not drained at stop", depth=agent.pipeline.outbox.depth())
                delivery.cancel()
    finally:
        agent.ready = False
        try:
            await agent.pipeline.outbox.close()
        except Exception:  # whatever it is, the rest of the stop must still run
            metrics.OUTBOX_ERRORS.labels("close").inc()
            log.exception("outbox close failed; unacknowledged messages stay in its file")
        agent.retention.close()
        agent.rule_store.close()
        notifier.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
    log.info("stopped")
