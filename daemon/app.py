"""The agent process: one event loop, one supervision tree, an ordered shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import structlog

from edge_agent.connectors.mqtt import MqttClient, MqttSink, MqttSource
from edge_agent.daemon.frames import FrameBuilder
from edge_agent.daemon.gate import Gate
from edge_agent.daemon.outbox import open_outbox
from edge_agent.daemon.pipeline import Pipeline
from edge_agent.models.manifest import load_manifest
from edge_agent.models.scorer import Scorer
from edge_agent.rules.engine import Advisor, load_pack

if TYPE_CHECKING:
    from edge_agent.daemon.readings import Reading
    from edge_agent.daemon.settings import MqttSettings, Settings

log = structlog.get_logger(__name__)


class Source:
    """What the agent needs of a source connector."""

    def batches(self) -> AsyncIterator[list[Reading]]:  # pragma: no cover - protocol
        """Yield batches of readings until cancelled."""
        raise NotImplementedError


def gateway_id(settings: Settings) -> str:
    """The gateway's name: the setting, else the host name."""
    return settings.agent.gateway_id or socket.gethostname()


def topic_prefix(settings: Settings) -> str:
    """The uplink topic prefix with the gateway filled in."""
    return settings.uplink.topic_prefix.replace("{gateway}", gateway_id(settings))


def _uplink_mqtt(settings: Settings) -> MqttSettings | None:
    """Settings for a separate uplink connection, or None to share the sensor broker's."""
    up = settings.uplink
    if not up.host and not up.port:
        return None
    return settings.mqtt.model_copy(
        update={"host": up.host or settings.mqtt.host, "port": up.port or settings.mqtt.port}
    )


def build_pipeline(settings: Settings) -> Pipeline:
    """Load the model and the rule pack and assemble the pipeline (blocking: model load)."""
    manifest = load_manifest(settings.model.manifest)
    scorer = Scorer(
        manifest,
        backends=settings.model.backends,
        onnx_providers=settings.model.onnx_providers,
        max_batch=settings.model.max_batch,
    )
    advisor = Advisor(
        load_pack(settings.rules.packs),
        model_name=manifest.name,
        model_version=manifest.version,
        signals=manifest.signals,
        classes=manifest.classes,
        gateway_id=gateway_id(settings),
    )
    frames = FrameBuilder(
        manifest.signals, manifest.rate_hz, manifest.window, manifest.hop, settings.frames
    )
    settings.agent.state_dir.mkdir(parents=True, exist_ok=True)
    return Pipeline(
        frames=frames,
        gate=Gate(settings.gate, len(manifest.signals)),
        scorer=scorer,
        advisor=advisor,
        outbox=open_outbox(settings.outbox, settings.agent.state_dir),
        topic_prefix=topic_prefix(settings),
    )


async def _feed(source: Source, pipeline: Pipeline) -> None:
    async for batch in source.batches():
        pipeline.ingest(batch)


async def _drain(pipeline: Pipeline) -> None:
    while pipeline.outbox.depth():  # noqa: ASYNC110 - only at stop, bounded by a timeout
        await asyncio.sleep(0.05)


async def run_agent(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the agent until `stop` is set or SIGTERM/SIGINT arrives, then stop in order.

    Shutdown order: stop intake, score the windows in flight into the outbox, give the
    outbox `shutdown_timeout_s` to deliver, disconnect. What is not delivered stays in the
    outbox for the next start.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = gateway_id(settings)
    structlog.contextvars.bind_contextvars(gateway=gateway)
    pipeline = await asyncio.to_thread(build_pipeline, settings)
    log.info(
        "model loaded",
        model=pipeline.scorer.manifest.name,
        version=pipeline.scorer.manifest.version,
        backend=pipeline.scorer.backend_name,
    )
    client_id = settings.mqtt.client_id or f"edge-agent-{gateway}"
    try:
        async with AsyncExitStack() as stack:
            ingest = await stack.enter_async_context(
                MqttClient(settings.mqtt, client_id=client_id, name="ingest")
            )
            up_settings = _uplink_mqtt(settings)
            uplink = ingest
            if up_settings is not None:
                uplink = await stack.enter_async_context(
                    MqttClient(up_settings, client_id=f"{client_id}-uplink", name="uplink")
                )
            sources: list[Source] = []
            if "mqtt" in settings.agent.sources:
                sources.append(
                    await stack.enter_async_context(MqttSource(ingest, settings.ingest, gateway))
                )
            async with asyncio.TaskGroup() as tg:
                intake = [
                    tg.create_task(_feed(s, pipeline), name=f"ingest-{i}")
                    for i, s in enumerate(sources)
                ]
                work = tg.create_task(pipeline.run(), name="pipeline")
                delivery = tg.create_task(pipeline.outbox.deliver(MqttSink(uplink)), name="outbox")
                log.info("agent running", sources=settings.agent.sources)
                await stop.wait()
                log.info("stopping", timeout_s=settings.agent.shutdown_timeout_s)
                for task in intake:
                    task.cancel()
                work.cancel()
                await pipeline.step()  # windows already cut go to the outbox
                try:
                    await asyncio.wait_for(_drain(pipeline), settings.agent.shutdown_timeout_s)
                except TimeoutError:
                    log.warning("outbox not drained at stop", depth=pipeline.outbox.depth())
                delivery.cancel()
    finally:
        with contextlib.suppress(Exception):
            await pipeline.outbox.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
