"""Shared fixtures: a real mosquitto per test, unique topics, a bundle signing key."""

from __future__ import annotations

import logging
import sys
import uuid
from typing import TYPE_CHECKING

import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.bundle import TrustedKeys
from edge_agent.simulator.broker import Broker, running_broker
from tests.bundle_kit import write_keys

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _logging_outlives_the_test() -> Iterator[None]:
    """Undo a test's logging set-up once it ends.

    A test that configures logging binds structlog and the root handler to the stream it
    had (pytest's capture of stderr, a StringIO); that stream is closed after the test, and
    every later log line would raise "I/O operation on closed file" in whatever callback
    logs it. Afterwards logs go to the real stderr of the process.
    """
    yield
    if structlog.is_configured():
        from edge_agent.core import logs  # noqa: PLC0415 - only when a test configured it

        logs.configure("info", "json", stream=sys.__stderr__)
        logging.getLogger().setLevel(logging.WARNING)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port."""
    with running_broker() as b:
        yield b


@pytest.fixture
def topic_root() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """A fresh bundle signing key."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def keys(tmp_path: Path, key: Ed25519PrivateKey) -> TrustedKeys:
    """The trusted bundle keys: `key` alone."""
    return TrustedKeys.load(write_keys(tmp_path / "trusted.keys", key))
