"""The uplink: the MQTT connection recommendations leave by, with its retained status."""

from __future__ import annotations

import asyncio
from typing import Protocol

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.mqtt_tls import BrokerTls
from edge_agent.connectors.settings import MqttSettings, UplinkSettings
from edge_agent.core import metrics
from edge_agent.core.readings import Outgoing, Priority, new_id


class UplinkSections(Protocol):
    """The sections the uplink reads: the sensor broker's (its defaults) and its own."""

    @property
    def mqtt(self) -> MqttSettings:
        """EDGE_MQTT: the sensor broker."""
        ...

    @property
    def uplink(self) -> UplinkSettings:
        """EDGE_UPLINK: what differs upstream."""
        ...


def uplink_mqtt_settings(sections: UplinkSections) -> MqttSettings:
    """The uplink's MqttSettings: EDGE_MQTT with EDGE_UPLINK's host, port and session."""
    up = sections.uplink
    changes: dict[str, object] = {
        "protocol": up.protocol,
        "session_expiry_s": up.session_expiry_s,
        "max_inflight": up.max_inflight,
    }
    if up.host:
        changes["host"] = up.host
    if up.port:
        changes["port"] = up.port
    return sections.mqtt.model_copy(update=changes)


def uplink_tls(sections: UplinkSections) -> BrokerTls:
    """The section whose TLS fields the uplink uses.

    Another broker (or TLS of its own): the uplink's, never the sensor broker's.
    """
    up = sections.uplink
    return up if up.host or up.tls_ca is not None else sections.mqtt


def uplink_prefix(uplink: UplinkSettings, gateway_id: str) -> str:
    """EDGE_UPLINK__TOPIC_PREFIX with the gateway filled in."""
    return uplink.topic_prefix.replace("{gateway}", gateway_id)


def status_topic(sections: UplinkSections, gateway_id: str) -> str:
    """The retained status topic: `<uplink prefix>/status`."""
    return f"{uplink_prefix(sections.uplink, gateway_id)}/status"


def uplink_client(sections: UplinkSections, gateway_id: str) -> MqttClient:
    """The uplink client: retained `online` on every connect, Will and clean stop `offline`."""
    topic = status_topic(sections, gateway_id)
    will = Outgoing(
        topic, b"offline", new_id(), key=gateway_id, priority=Priority.STATUS, qos=1, retain=True
    )
    online = will._replace(payload=b"online", msg_id=new_id())
    # Its own client id: sharing the sensor client's would make the broker kick one out.
    client_id = f"{sections.mqtt.client_id or f'edge-agent-{gateway_id}'}-uplink"
    return MqttClient(
        uplink_mqtt_settings(sections),
        client_id=client_id,
        name="uplink",
        will=will,
        online=online,
        tls=uplink_tls(sections),
    )


class MqttSink:
    """Publishes outgoing messages over an MqttClient (the uplink); a `Sink`."""

    def __init__(self, client: MqttClient) -> None:
        self._client = client

    @property
    def window(self) -> int:
        """How many publishes may wait for their ack at once (EDGE_*__MAX_INFLIGHT)."""
        return self._client.settings.max_inflight

    @property
    def connected(self) -> asyncio.Event:
        """Set while the uplink is connected."""
        return self._client.connected

    async def publish(self, msg: Outgoing) -> None:
        """Return once the broker acked the message (QoS 1) or it was written (QoS 0)."""
        await self._client.publish(msg)
        metrics.PUBLISHED.inc()

    def submit(self, msg: Outgoing) -> asyncio.Future[None]:
        """`publish` as a future (no task per message while connected)."""
        fut = self._client.submit(msg)
        fut.add_done_callback(_count_published)
        return fut


def _count_published(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        metrics.PUBLISHED.inc()
