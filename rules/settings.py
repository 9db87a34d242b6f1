"""Settings of the rule packs; the asset metadata they read lives in core/assets.py."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edge_agent.core.assets import AssetMeta, AssetSettings, Criticality
from edge_agent.core.settings import Section

__all__ = ["AssetMeta", "AssetSettings", "Criticality", "RuleSettings"]


class RuleSettings(Section):
    """Rule packs that turn scores into recommendations."""

    packs: list[Path] = Field(
        default_factory=list,
        description="Rule pack files (JSON list); empty means the pack shipped with the agent.",
    )
    review_topic: str = Field(
        "needs_review",
        description="Topic level under the uplink prefix for anomalies the model cannot "
        "classify: <prefix>/<review_topic>/<asset>.",
    )
    max_assets: int = Field(
        1000,
        ge=1,
        description="Assets whose rule state is kept; past it the least recently seen asset's "
        "state is dropped (counted).",
    )
