"""Settings of the outbox."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge_agent.core.settings import Section


class OutboxSettings(Section):
    """Messages waiting for the uplink."""

    max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=64 * 1024,
        description="Size cap of the outbox file in bytes (SQLite pages); when full the lowest "
        "priority class, oldest first, is dropped.",
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="normal: a message survives a crash of the agent once put() returns, the "
        "last ones may be lost on power loss; full: fsync per put(), survives power loss.",
    )
    memory_max_messages: int = Field(
        10_000,
        ge=10,
        description="Messages buffered in memory while the disk cannot be written (disk full, "
        "read-only); when full the lowest priority class, oldest first, is dropped.",
    )
