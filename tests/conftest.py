"""Shared fixtures: a real mosquitto per test, unique topics."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from edge_agent.simulator.broker import Broker, running_broker

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port."""
    with running_broker() as b:
        yield b


@pytest.fixture
def topic_root() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"
