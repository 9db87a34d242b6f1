"""An asset's learning state, as /health, the metrics and the retained state topic show it.

    learning   recording rows of normal operation (`stage` recording, `progress` 0..1 of
               the period), then fitting in a worker (`stage` queued, fitting)
    scoring    its learned model serves it
    failed     no model could be made (`reason` says why, e.g. the fit's refusal); it stays
               so until a relearn

The topic is `<prefix>/assets/<asset>/state`, retained, so a dashboard that subscribes late
still sees where each asset stands.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from edge_agent.core.readings import Outgoing, Priority, new_id

State = Literal["learning", "scoring", "failed"]
Stage = Literal["recording", "queued", "fitting"]
STATES: tuple[State, ...] = ("learning", "scoring", "failed")
_NOT_IN_TOPICS = str.maketrans({"/": "_", "+": "_", "#": "_"})


class AssetState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One asset's learning state (the state topic's payload)."""

    asset: str
    profile: str
    state: State
    stage: Stage | None = None
    progress: float | None = None  # of the stage: rows recorded / needed, or of the fit
    rows: int | None = None
    rows_needed: int | None = None
    reason: str | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    model: str | None = None  # name and version of the learned model
    ts: float = 0.0  # wall time of this state

    def brief(self) -> dict[str, object]:
        """What /health lists per asset."""
        out: dict[str, object] = {"state": self.state}
        if self.stage is not None:
            out["stage"] = self.stage
        if self.progress is not None:
            out["progress"] = round(self.progress, 3)
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def state_topic(prefix: str, asset: str) -> str:
    """`<prefix>/assets/<asset>/state` (topic wildcards in a name become `_`)."""
    return f"{prefix}/assets/{asset.translate(_NOT_IN_TOPICS)}/state"


def relearn_filter(prefix: str) -> str:
    """The subscription of the relearn command: `<prefix>/assets/+/relearn`."""
    return f"{prefix}/assets/+/relearn"


def relearn_topic(prefix: str, asset: str) -> str:
    """Where `edge-agent model relearn ASSET` publishes."""
    return f"{prefix}/assets/{asset.translate(_NOT_IN_TOPICS)}/relearn"


def asset_of_relearn(prefix: str, topic: str) -> str | None:
    """The asset a relearn command names; None for another topic."""
    head, tail = f"{prefix}/assets/", "/relearn"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    asset = topic[len(head) : -len(tail)]
    return asset if asset and "/" not in asset else None


def state_message(prefix: str, state: AssetState) -> Outgoing:
    """The retained state message of one asset."""
    stamped = msgspec.structs.replace(state, ts=round(time.time(), 3))
    return Outgoing(
        state_topic(prefix, state.asset),
        msgspec.json.encode(stamped),
        new_id(),
        key=state.asset,
        priority=Priority.STATUS,
        retain=True,
    )
