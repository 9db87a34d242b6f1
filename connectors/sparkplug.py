"""Sparkplug B ingest: edge nodes' births, data and deaths over MQTT, as readings.

A `Source` over its own client to the sensor broker (EDGE_MQTT), named `sparkplug` in
/health. What a message means is `sparkplug_session.Sessions`' business; this module
subscribes, buffers (bounded: new readings are dropped and counted when full), dead-letters
what cannot be read, and sends the rebirth requests the sessions ask for: one NCMD
`Node Control/Rebirth` per node per EDGE_SPARKPLUG__REBIRTH_INTERVAL_S at most.

With EDGE_SPARKPLUG__HOST_ID set the agent is a Sparkplug 3.0 primary host application: its
retained STATE (`{"online": true, "timestamp": ...}`) goes out on every connect, the same
with `online: false` is its Will, and a stale `offline` seen for its own id while connected
(an earlier session's Will) is answered by publishing `online` again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Final, Self

import structlog
from prometheus_client import Counter

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import MqttSettings, SparkplugSettings
from edge_agent.connectors.sparkplug_session import (
    NAMESPACE,
    Sessions,
    SparkplugRejected,
    rebirth_payload,
)
from edge_agent.core import metrics
from edge_agent.core.errors import ConnectorError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, Reading, new_id

log = structlog.get_logger(__name__)

SPARKPLUG_EVENTS = Counter(
    "edge_sparkplug_events_total",
    "Sparkplug session events: birth, death, stale_death (an old Will), seq_gap, unborn (data "
    "before its birth), unknown_alias, birth_refused (max_metrics), rebirth_requested, "
    "rebirth_unsent (not connected).",
    ["event"],
    registry=metrics.REGISTRY,
)
_MAX_ASKED: Final = 4096  # nodes whose last rebirth request time is kept


def state_topic(host_id: str) -> str:
    """Where a primary host application's STATE lives (Sparkplug 3.0)."""
    return f"{NAMESPACE}/STATE/{host_id}"


def host_state(host_id: str, *, online: bool, timestamp_ms: int) -> Outgoing:
    """The retained STATE birth (online) or death (offline) of this host application."""
    body = json.dumps({"online": online, "timestamp": timestamp_ms}).encode()
    return Outgoing(
        state_topic(host_id), body, new_id(), key=host_id, priority=Priority.STATUS, retain=True
    )


class SparkplugSource:
    """Readings from Sparkplug B edge nodes; an async context manager over a running client."""

    def __init__(
        self,
        client: MqttClient,
        settings: SparkplugSettings,
        gateway_id: str,
        online: Outgoing | None = None,
    ) -> None:
        self._client = client
        self.name = client.name  # the link in /health: `sparkplug`
        self.connected = client.connected  # set while connected to the sensor broker
        self._settings = settings
        self._sessions = Sessions(settings, self._rebirth, self._on_event)
        self._online = online
        self._buf: list[Reading] = []
        self._ready = asyncio.Event()
        self._accepted = 0
        prefix = settings.deadletter_topic.format(gateway=gateway_id).rstrip("/")
        self._deadletter = prefix + "/" if prefix else ""
        self._asked: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._limited = RateLimited(settings.log_interval_s)
        self._in = metrics.READINGS_IN.labels("sparkplug")
        self._full = metrics.READINGS_DROPPED.labels("buffer_full")
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        qos = self._settings.qos
        for group in self._settings.groups:
            self._client.subscribe(f"{NAMESPACE}/{group}/#", qos, self._on_message)
        if self._online is not None:
            self._client.subscribe(state_topic(self._settings.host_id), 1, self._on_own_state)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._count()

    @property
    def sessions(self) -> Sessions:
        """The edge nodes' sessions (what was learned from their births)."""
        return self._sessions

    async def wait_ready(self) -> None:
        """Return once connected and every subscription is acknowledged."""
        await self._client.wait_subscribed()

    async def batches(self) -> AsyncIterator[list[Reading]]:
        """Yield whatever arrived since the last batch (never an empty list)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._buf = self._buf, []
            self._count()
            if batch:
                yield batch

    # -- messages (paho's callback, on the loop) ------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            readings = self._sessions.handle(topic, payload, time.time())
        except SparkplugRejected as rej:
            self._dead_letter(topic, payload, rej)
            return
        if readings:
            self._keep(readings, topic)

    def _keep(self, readings: list[Reading], topic: str) -> None:
        room = self._settings.max_buffered - len(self._buf)
        if room < len(readings):
            lost = len(readings) - max(room, 0)
            self._full.inc(lost)  # at once: a full buffer means nobody takes batches
            del readings[max(room, 0) :]
            self._warn("buffer_full", topic=topic, dropped=lost)
        self._buf += readings
        self._accepted += len(readings)
        self._ready.set()

    def _dead_letter(self, topic: str, payload: bytes, rej: SparkplugRejected) -> None:
        metrics.MESSAGES_REJECTED.labels(rej.reason).inc()
        sent = False
        # A dead letter is never dead-lettered again (a wide subscription would loop).
        if self._deadletter and not topic.startswith(self._deadletter):
            sent = self._client.publish_nowait(f"{self._deadletter}{rej.reason}/{topic}", payload)
            if not sent:
                metrics.DEADLETTER_DROPPED.inc()
        self._warn(rej.reason, topic=topic, detail=rej.detail, deadlettered=sent)

    def _rebirth(self, group: str, node: str) -> None:
        """Ask `node` for its births, unless it was asked less than the interval ago."""
        key = (group, node)
        now = time.monotonic()
        last = self._asked.get(key)
        if last is not None and now - last < self._settings.rebirth_interval_s:
            return
        topic = f"{NAMESPACE}/{group}/NCMD/{node}"
        if not self._client.publish_nowait(topic, rebirth_payload(int(time.time() * 1000))):
            SPARKPLUG_EVENTS.labels("rebirth_unsent").inc()
            return  # not connected: the next message that needs it asks again
        SPARKPLUG_EVENTS.labels("rebirth_requested").inc()
        self._asked[key] = now
        self._asked.move_to_end(key)
        if len(self._asked) > _MAX_ASKED:
            self._asked.popitem(last=False)
        log.info("sparkplug_rebirth_requested", group=group, node=node)

    def _on_own_state(self, _topic: str, payload: bytes) -> None:
        try:
            online = bool(json.loads(payload).get("online"))
        except (ValueError, AttributeError):
            online = False
        if online or self._online is None or not self._client.connected.is_set():
            return
        # An earlier session's Will (or another host with our id) said offline: say online.
        task = asyncio.get_running_loop().create_task(
            self._republish(self._online), name="sparkplug-state"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _republish(self, msg: Outgoing) -> None:
        try:
            await self._client.publish(msg._replace(msg_id=new_id()))
        except ConnectorError as exc:
            log.warning("sparkplug_state_not_published", error=str(exc))

    # -- counts and logs ------------------------------------------------------------------
    def _count(self) -> None:
        if self._accepted:
            self._in.inc(self._accepted)
            self._accepted = 0

    def _on_event(self, event: str, n: int) -> None:
        SPARKPLUG_EVENTS.labels(event).inc(n)
        if event not in ("birth", "death"):
            self._warn(event)

    def _warn(self, what: str, **facts: object) -> None:
        held = self._limited.allow(what)
        if held is not None:
            log.warning("sparkplug_message_not_read", problem=what, held_back=held, **facts)


@contextlib.asynccontextmanager
async def open_sparkplug_source(
    mqtt: MqttSettings, settings: SparkplugSettings, gateway_id: str
) -> AsyncIterator[SparkplugSource]:
    """The `sparkplug` source: its own client to the sensor broker, readings over it."""
    client_id = f"{mqtt.client_id or f'edge-agent-{gateway_id}'}-sparkplug"
    online = will = None
    if settings.host_id:
        born = int(time.time() * 1000)  # birth and Will carry the same timestamp (3.0)
        online = host_state(settings.host_id, online=True, timestamp_ms=born)
        will = host_state(settings.host_id, online=False, timestamp_ms=born)
    async with (
        MqttClient(mqtt, client_id=client_id, name="sparkplug", will=will, online=online) as c,
        SparkplugSource(c, settings, gateway_id, online) as source,
    ):
        yield source
