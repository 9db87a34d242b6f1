"""What the agent needs of a connector: `Source` for readings in, `Sink` for messages out.

A connector implements one of these and nothing else of the agent: the daemon reads link
states from them for /health, READY and STATUS, and never asks which protocol is behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Protocol

from edge_agent.core.readings import Outgoing, Reading


class Source(Protocol):
    """An open source of readings (opened as an async context manager, see the registry)."""

    @property
    def name(self) -> str:
        """The link's name in /health and STATUS= (`ingest`, `opcua`)."""
        ...

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link to the outside world is up."""
        ...

    async def wait_ready(self) -> None:
        """Return once the link is up and readings can flow (subscriptions acknowledged)."""
        ...

    def batches(self) -> AsyncIterator[list[Reading]]:
        """Yield batches of readings (never empty) until cancelled."""
        ...


class Sink(Protocol):
    """Where the outbox publishes: returns from `publish` once the message is acknowledged."""

    @property
    def window(self) -> int:
        """How many publishes may wait for their acknowledgement at once."""
        ...

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link upstream is up."""
        ...

    async def publish(self, msg: Outgoing) -> None:
        """Return once the far end acknowledged `msg`; raise ConnectorError if it cannot."""
        ...
