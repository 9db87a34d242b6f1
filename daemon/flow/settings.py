"""Settings of the flow: frames and the gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.core.settings import Section


class FrameSettings(Section):
    """Per-asset frames on a fixed-rate grid (rate and window come from the model)."""

    stale_after_s: float = Field(
        10.0, gt=0, description="A signal not updated for this long makes its windows incomplete."
    )
    max_assets: int = Field(
        1000,
        ge=1,
        description="Assets tracked at once (edge_assets_tracked); readings of further assets "
        "are dropped (too_many_assets).",
    )
    asset_idle_s: float = Field(
        600.0,
        gt=0,
        description="An asset that sent nothing for this long (wall clock) is forgotten and its "
        "slot freed (edge_assets_evicted_total); its next reading starts a new frame.",
    )
    max_gap_s: float = Field(
        300.0, gt=0, description="A jump in time longer than this restarts the asset's frame."
    )
    max_pending_windows: int = Field(
        4096, ge=16, description="Windows waiting for the scorer; when full the oldest is dropped."
    )


class GateSettings(Section):
    """The cheap statistical stage ahead of the model."""

    mode: Literal["all", "adaptive"] = Field(
        "adaptive",
        description="all: every window is scored; adaptive: normal windows are skipped when the "
        "backlog passes `backlog_high`, except every `sample_every`-th.",
    )
    ewma_alpha: float = Field(
        0.02, gt=0, le=1, description="Weight of a new window in the per-signal baseline."
    )
    z_limit: float = Field(
        4.0, gt=0, description="Window mean z-score that always needs the model."
    )
    sample_every: int = Field(
        10, ge=1, description="Under load, one normal window in this many is still scored."
    )
    backlog_high: int = Field(
        512, ge=1, description="Pending windows above which the gate skips normal windows."
    )
