"""How the app connects learning: the learner, its lanes, the relearn command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from edge_agent.core.assets import Profile
from edge_agent.daemon.flow.lanes import Lane, build_lane
from edge_agent.daemon.learning.learner import Learner
from edge_agent.daemon.learning.state import asset_of_relearn, relearn_filter
from edge_agent.daemon.learning.store import Store
from edge_agent.models.manifest import Manifest

if TYPE_CHECKING:
    from edge_agent.connectors.mqtt import MqttClient
    from edge_agent.daemon.flow.pipeline import Pipeline
    from edge_agent.daemon.settings import Settings

log = structlog.get_logger(__name__)


def build_learner(
    settings: Settings, pipeline: Pipeline, prefix: str, gateway_id: str
) -> Learner | None:
    """The learner, its models of earlier runs loaded into the pipeline (blocking: at start).

    None when no profile learns: the agent then has no learning at all.
    """
    if not any(p.learns for p in settings.assets.profiles):
        return None

    def build(asset: str, profile: Profile, manifest: Manifest) -> Lane:
        return build_lane(
            f"asset:{asset}", manifest, settings, gateway_id=gateway_id, packs=profile.rules
        )

    learner = Learner(
        settings.learning,
        settings.assets,
        settings.frames,
        Store(settings.agent.state_dir),
        prefix=prefix,
        build=build,
        tflite="litert" in settings.model.order,
    )
    for asset, lane in learner.load():
        pipeline.add_learned(asset, lane)
    learner.host = pipeline
    learner.publish = pipeline.outbox.put
    pipeline.router.learning = learner
    return learner


def subscribe_relearn(uplink: MqttClient, learner: Learner, prefix: str) -> None:
    """`<prefix>/assets/<asset>/relearn` on the uplink broker relearns the asset."""

    def on_relearn(topic: str, _payload: bytes) -> None:
        asset = asset_of_relearn(prefix, topic)
        if asset is not None:
            learner.relearn_topic_name(asset)

    uplink.subscribe(relearn_filter(prefix), 1, on_relearn)
