"""EDGE_AGENT__SOURCES accepts exactly the sources the registry can open: the setting's names
live in connectors/settings.py, the factories in connectors/registry.py."""

from __future__ import annotations

from typing import get_args

import pytest

from edge_agent.connectors.registry import SOURCES
from edge_agent.connectors.settings import SourceName
from edge_agent.daemon.settings import Settings


def test_every_accepted_name_opens_and_every_factory_is_accepted() -> None:
    assert set(get_args(SourceName)) == set(SOURCES)


def test_an_unknown_source_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"sources"):
        Settings(agent={"sources": ["modbus"]})
