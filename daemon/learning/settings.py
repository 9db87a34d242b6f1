"""Settings of learning on the gateway."""

from __future__ import annotations

from pydantic import Field

from edge_agent.core.settings import Section


class LearningSettings(Section):
    """Learning on the gateway: recording, fitting in a worker process, state messages."""

    max_rows: int = Field(
        86_400,
        ge=200,
        description="Rows one asset may record while learning (a profile whose learn_period_s "
        "x rate_hz needs more is refused at start).",
    )
    max_learning: int = Field(
        50,
        ge=1,
        description="Assets learning at once, each holding up to max_rows x its signals x 4 "
        "bytes; readings of further ones are dropped (counted) until one finishes.",
    )
    max_fits: int = Field(
        1, ge=1, description="Fits running at once (each a worker process); the others wait."
    )
    fit_nice: int = Field(
        10, ge=0, le=19, description="Added to a fit worker's scheduling priority (nice)."
    )
    fit_memory_mb: int = Field(
        1024, ge=0, description="Address-space cap of a fit worker in MiB (0: none)."
    )
    fit_timeout_s: float = Field(
        900.0, gt=0, description="A fit running longer than this is stopped and the asset fails."
    )
    backlog_readings: int = Field(
        20_000,
        ge=0,
        description="Readings of an asset kept while its model is fitted, scored once it is "
        "ready; past it the oldest are dropped (counted).",
    )
    state_interval_s: float = Field(
        10.0,
        gt=0,
        description="Learning progress goes to the state topic at most this often per asset "
        "(state changes at once).",
    )
