"""The sources the agent can be configured with: one name, one factory, in one place.

A factory imports its connector's module only when it is called, so a protocol library
(asyncua, protobuf) is loaded only when a source that needs it is in EDGE_AGENT__SOURCES. Opening a
source is entering the async context manager its factory returns; what it yields is a
`Source`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType
from typing import Final, Protocol

from edge_agent.connectors.settings import (
    IngestSettings,
    MqttSettings,
    OpcUaSettings,
    SparkplugSettings,
)
from edge_agent.core.errors import ConfigError
from edge_agent.core.ports import Source


class SourceSections(Protocol):
    """The settings sections the sources read (the agent's settings tree has them all)."""

    @property
    def mqtt(self) -> MqttSettings:
        """EDGE_MQTT: the sensor broker."""
        ...

    @property
    def ingest(self) -> IngestSettings:
        """EDGE_INGEST: topics and payloads to readings."""
        ...

    @property
    def opcua(self) -> OpcUaSettings:
        """EDGE_OPCUA: the OPC UA server and its node map."""
        ...

    @property
    def sparkplug(self) -> SparkplugSettings:
        """EDGE_SPARKPLUG: Sparkplug B edge nodes on the sensor broker."""
        ...


SourceFactory = Callable[[SourceSections, str], AbstractAsyncContextManager[Source]]


def _mqtt(sections: SourceSections, gateway_id: str) -> AbstractAsyncContextManager[Source]:
    from edge_agent.connectors.mqtt_source import open_mqtt_source  # noqa: PLC0415 - lazily

    return open_mqtt_source(sections.mqtt, sections.ingest, gateway_id)


def _opcua(sections: SourceSections, _gateway_id: str) -> AbstractAsyncContextManager[Source]:
    from edge_agent.connectors.opcua import OpcUaSource  # noqa: PLC0415 - asyncua when asked

    return OpcUaSource(sections.opcua)


def _sparkplug(sections: SourceSections, gateway_id: str) -> AbstractAsyncContextManager[Source]:
    from edge_agent.connectors.sparkplug import open_sparkplug_source  # noqa: PLC0415 - lazily

    return open_sparkplug_source(sections.mqtt, sections.sparkplug, gateway_id)


SOURCES: Final[Mapping[str, SourceFactory]] = MappingProxyType(
    {"mqtt": _mqtt, "opcua": _opcua, "sparkplug": _sparkplug}
)


def open_source(
    name: str, sections: SourceSections, gateway_id: str
) -> AbstractAsyncContextManager[Source]:
    """The source called `name`, to be entered (`async with`) to connect it."""
    factory = SOURCES.get(name)
    if factory is None:
        raise ConfigError(
            f"EDGE_AGENT__SOURCES: no source {name!r}; known: {', '.join(sorted(SOURCES))}"
        )
    return factory(sections, gateway_id)
