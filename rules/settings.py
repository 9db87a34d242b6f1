"""Settings of the rule packs and the asset metadata they read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_agent.core.settings import Section


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


Criticality = Literal["low", "medium", "high"]


class AssetMeta(Section):
    """What rule packs know about one asset (meta.type, meta.criticality, meta.state)."""

    type: str = Field("pump", description="Kind of machine, e.g. pump, motor, fan.")
    criticality: Criticality = Field(
        "medium", description="How much the process depends on it: low, medium, high."
    )
    state: str = Field("running", description="Operating state as the site reports it.")


class AssetSettings(Section):
    """Asset metadata for rule packs."""

    meta: dict[str, AssetMeta] = Field(
        default_factory=dict,
        description='Asset -> {"type", "criticality", "state"} (JSON object); '
        "assets not listed get the defaults below.",
    )
    default_type: str = Field("pump", description="Type of an asset not listed in `meta`.")
    default_criticality: Criticality = Field(
        "medium", description="Criticality of an asset not listed in `meta`."
    )

    def of(self, asset: str) -> AssetMeta:
        """The metadata of one asset."""
        found = self.meta.get(asset)
        if found is not None:
            return found
        return AssetMeta(type=self.default_type, criticality=self.default_criticality)
