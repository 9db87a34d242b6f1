"""Sensor readings over MQTT: topics and payloads mapped to readings, rejects dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final, Self

import structlog

from edge_agent.connectors.mapping import PayloadMapper, Rejected
from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import IngestSettings, MqttSettings
from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Reading

log = structlog.get_logger(__name__)

MQTT_MAX_TOPIC_BYTES: Final = 65_535
_SHOWN: Final = 200  # characters of a topic in a log line


class MqttSource:
    """Readings from sensor topics; an async context manager over a running MqttClient.

    A `Source` whose link is its client's connection (named after the client: `ingest`).

    The buffer between paho's callback and `batches()` holds at most
    `IngestSettings.max_buffered` readings; when full, new readings are dropped (counted as
    `buffer_full`). Rejected messages go to the dead-letter topic unchanged, except what MQTT
    or the settings bound: a topic cut to MQTT's 65,535 bytes, a payload to
    `max_payload_bytes` (each cut counted in `edge_deadletter_cut_total`).
    """

    def __init__(self, client: MqttClient, ingest: IngestSettings, gateway_id: str) -> None:
        self._client = client
        self._ingest = ingest
        self._mapper = PayloadMapper(ingest)
        self._max = ingest.max_buffered
        self._buf: list[Reading] = []
        self._ready = asyncio.Event()
        self._accepted = 0
        prefix = ingest.deadletter_topic.format(gateway=gateway_id)
        self._deadletter = prefix.rstrip("/") if prefix else ""
        self._limited = RateLimited(ingest.log_interval_s)
        self._in = metrics.READINGS_IN.labels("mqtt")
        self._full = metrics.READINGS_DROPPED.labels("buffer_full")

    async def __aenter__(self) -> Self:
        for topic_filter in self._mapper.subscriptions:
            self._client.subscribe(topic_filter, self._ingest.qos, self._on_message)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._flush_counts()

    @property
    def name(self) -> str:
        """The client's name, which /health shows the link under."""
        return self._client.name

    @property
    def connected(self) -> asyncio.Event:
        """Set while the client is connected to the sensor broker."""
        return self._client.connected

    async def wait_ready(self) -> None:
        """Return once connected and every sensor subscription is acknowledged."""
        await self._client.wait_subscribed()

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            readings = self._mapper.decode(topic, payload)
        except Rejected as rej:
            self._reject(topic, payload, rej)
            return
        buf = self._buf
        room = self._max - len(buf)
        if len(readings) > room:
            # Counted at once: a full buffer means the consumer is stuck, so no batch flushes.
            self._full.inc(len(readings) - max(room, 0))
            readings = readings[: max(room, 0)]
            held = self._limited.allow("buffer_full")
            if held is not None:
                log.warning(
                    "readings_dropped",
                    reason="buffer_full",
                    topic=topic,
                    max_buffered=self._max,
                    held_back=held,
                )
        buf.extend(readings)
        self._accepted += len(readings)
        self._ready.set()

    def _reject(self, topic: str, payload: bytes, rej: Rejected) -> None:
        metrics.MESSAGES_REJECTED.labels(rej.reason).inc()
        sent = False
        # Never dead-letter a dead letter: a subscription wide enough to see them would loop.
        if self._deadletter and not topic.startswith(self._deadletter + "/"):
            sent = self._deadletter_copy(topic, payload, rej)
            if not sent:
                metrics.DEADLETTER_DROPPED.inc()
        held = self._limited.allow(rej.reason)
        if held is not None:
            log.warning(
                "message_rejected",
                reason=rej.reason,
                topic=topic
                if len(topic) <= _SHOWN
                else f"{topic[:_SHOWN]}... ({len(topic)} chars)",
                detail=rej.detail,
                deadlettered=sent,
                held_back=held,
            )

    def _deadletter_copy(self, topic: str, payload: bytes, rej: Rejected) -> bool:
        """Republish a rejected message, cut to what MQTT and EDGE_INGEST bound."""
        head = f"{self._deadletter}/{rej.reason}/"
        room = MQTT_MAX_TOPIC_BYTES - len(head.encode())
        raw = topic.encode()
        if len(raw) > room:
            # Cut at a character boundary: the topic must stay valid UTF-8.
            topic = raw[:room].decode("utf-8", "ignore")
            metrics.DEADLETTER_CUT.labels("topic").inc()
        if len(payload) > self._ingest.max_payload_bytes:
            payload = payload[: self._ingest.max_payload_bytes]
            metrics.DEADLETTER_CUT.labels("payload").inc()
        try:
            return self._client.publish_nowait(head + topic, payload)
        except ValueError as exc:  # paho refuses the topic (a wildcard in the configured prefix)
            if self._limited.allow("deadletter_topic") is not None:
                log.error(  # noqa: TRY400 - the reason is in the message, a traceback adds nothing
                    "deadletter_refused", prefix=self._deadletter, error=str(exc)
                )
            return False

    def _flush_counts(self) -> None:
        if self._accepted:
            self._in.inc(self._accepted)
            self._accepted = 0

    async def batches(self) -> AsyncIterator[list[Reading]]:
        """Yield whatever arrived since the last batch (never an empty list)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._buf = self._buf, []
            self._flush_counts()  # counted per batch, not per message: one lock per batch
            if batch:
                yield batch


def _shown(topic: str) -> str:
    return topic if len(topic) <= _SHOWN else f"{topic[:_SHOWN]}... ({len(topic)} chars)"


@contextlib.asynccontextmanager
async def open_mqtt_source(
    mqtt: MqttSettings, ingest: IngestSettings, gateway_id: str
) -> AsyncIterator[MqttSource]:
    """The `mqtt` source: its own client to the sensor broker (`ingest`), readings over it."""
    client_id = mqtt.client_id or f"edge-agent-{gateway_id}"
    async with (
        MqttClient(mqtt, client_id=client_id, name="ingest") as client,
        MqttSource(client, ingest, gateway_id) as source,
    ):
        yield source
