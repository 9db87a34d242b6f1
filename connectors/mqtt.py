"""MQTT in and out: one paho client on the running event loop, no paho thread.

The socket is driven by the loop (mqtt_socket.py); a task reconnects with a jittered,
capped exponential delay and re-subscribes on every connect. Only the blocking TCP connect
and TLS handshake run in the default executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Callable
from typing import Any, Final, Literal, Self, cast

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.connectors.mqtt_socket import LoopSocket
from edge_agent.connectors.mqtt_tls import BrokerTls, connect_error, ssl_context
from edge_agent.connectors.settings import MqttSettings
from edge_agent.core import metrics
from edge_agent.core.errors import ConnectorError, PublishRefusedError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing

log = structlog.get_logger(__name__)

OnMessage = Callable[[str, bytes], None]
MSG_ID_PROPERTY: Final = "msg_id"  # MQTT 5 user property carrying Outgoing.msg_id
# QoS 0 messages handed to paho and not yet written (dead letters): beyond this many, or
# this many payload bytes, drop.
_MAX_UNWRITTEN_QOS0: Final = 1000
_MAX_UNWRITTEN_QOS0_BYTES: Final = 4 * 1024 * 1024


def _strip_share(topic_filter: str) -> str:
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


class _MsgIdProperties(Properties):
    """PUBLISH properties holding only the msg_id user property, encoded once.

    paho's Properties validates every attribute against every property name, a dozen
    string scans per set and per pack(): ~40 us a message, as much as the rest of a publish.
    paho only ever calls pack() on what it is given to send.
    """

    def __init__(self, msg_id: str) -> None:
        key, value = MSG_ID_PROPERTY.encode(), msg_id.encode()
        body = (
            b"\x26"  # User Property: a UTF-8 string pair
            + len(key).to_bytes(2, "big")
            + key
            + len(value).to_bytes(2, "big")
            + value
        )
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", _varint(len(body)) + body)
        object.__setattr__(self, "UserProperty", [(MSG_ID_PROPERTY, msg_id)])

    def pack(self) -> bytes:
        """The encoded properties, length first."""
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed


def _varint(n: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class MqttClient:
    """One paho client on the running loop; an async context manager.

    `publish` waits for the connection, then for the broker's PUBACK (QoS 1) or the write
    (QoS 0). If the connection drops while a QoS 1 publish waits for its PUBACK, it keeps
    waiting: paho re-sends the message (DUP) after the reconnect and the ack of the re-sent
    message completes it. It raises ConnectorError only when the client closes first, or
    when the broker refuses the message (MQTT 5 reason code >= 0x80).

    `tls` is the section whose TLS fields apply (default: `settings`); errors name its
    variables.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        name: str,
        will: Outgoing | None = None,
        online: Outgoing | None = None,
        tls: BrokerTls | None = None,
    ) -> None:
        self.settings = settings
        self.tls = settings if tls is None else tls
        self.name = name
        self.connected = asyncio.Event()
        self._will = will
        self._online = online
        self._v5 = settings.protocol == "5"
        self._subs: dict[str, tuple[int, OnMessage]] = {}
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._unwritten_qos0: dict[int, int] = {}  # mid -> payload bytes
        self._unwritten_bytes = 0
        self._lost = asyncio.Event()
        self._closed = asyncio.Event()
        self._connect_fut: asyncio.Future[None] | None = None
        self._unacked_subs: dict[int, str] = {}
        self._subscribed = asyncio.Event()  # set while no SUBSCRIBE waits for its SUBACK
        self._subscribed.set()
        self._gate = asyncio.Lock()  # FIFO: publishes waiting for the connection, in order
        self._gated = 0  # publishes queued at or holding the gate
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting = False
        self._closing = False
        self._ever_connected = False
        self._limited = RateLimited(10.0)
        self._client = self._make_client(client_id)
        self._io = LoopSocket(self._client, self._dispatch, v5=self._v5)
        self._peer = {"client": name, "host": settings.host, "port": settings.port}

    # -- set-up -------------------------------------------------------------------------
    def _make_client(self, client_id: str) -> paho.Client:
        s = self.settings
        proto = MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311
        kwargs: dict[str, Any] = {}
        if not self._v5:
            kwargs["clean_session"] = s.session_expiry_s == 0
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
        c.connect_timeout = s.connect_timeout_s
        c.max_inflight_messages_set(s.max_inflight)
        if s.username is not None:
            pw = s.password.get_secret_value() if s.password is not None else None
            c.username_pw_set(s.username, pw)
        if self.tls.tls_ca is not None:
            c.tls_set_context(ssl_context(self.tls))
        if self._will is not None:
            w = self._will
            c.will_set(w.topic, w.payload, w.qos, w.retain, self._properties(w))
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        return c

    def _properties(self, msg: Outgoing) -> Properties | None:
        if not self._v5 or not msg.msg_id:
            return None
        return _MsgIdProperties(msg.msg_id)

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._io.attach()
        misc = self._io.run_misc(lambda: self._connecting)
        self._tasks = [
            asyncio.create_task(self._connection(), name=f"mqtt-{self.name}-connection"),
            asyncio.create_task(misc, name=f"mqtt-{self.name}-misc"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop cleanly; the CancelledError of our own tasks is absorbed, nothing else is."""
        self._closing = True
        self._closed.set()
        try:
            if self.connected.is_set():
                await self._clean_stop()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            fut = self._connect_fut
            if fut is not None and not fut.done():
                # A connect in its thread: let it end, so its socket is closed, not leaked.
                await asyncio.wait([fut], timeout=self.settings.connect_timeout_s)
                await asyncio.sleep(0)  # run the socket callbacks it queued
                if fut.done() and not fut.cancelled() and fut.exception() is not None:
                    log.debug(
                        "mqtt_connect_abandoned", client=self.name, error=str(fut.exception())
                    )
            if self._io.sock is not None:
                # Write DISCONNECT now: a clean MQTT disconnect is what suppresses the Will.
                self._client.disconnect()
                self._client.loop_write()
            self._io.drop()
            self.connected.clear()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectorError(f"mqtt {self.name}: closed before the ack"))
            self._pending.clear()

    async def _clean_stop(self) -> None:
        """Flush acks in flight, then publish the Will's payload explicitly (clean stop)."""
        waiting = [f for f in self._pending.values() if not f.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=self.settings.connect_timeout_s)
        if self._will is not None:
            with contextlib.suppress(ConnectorError, TimeoutError):
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await self._publish(self._will)

    # -- the connection -----------------------------------------------------------------
    async def _connection(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        delay = s.reconnect_min_s
        while True:
            self._lost.clear()
            self._connecting = True
            self._connect_fut = loop.run_in_executor(None, self._connect_blocking)
            try:
                # Shielded: a thread cannot be cancelled; __aexit__ waits for it instead.
                await asyncio.shield(self._connect_fut)
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._connecting = False
                self._log_connect_error(exc)
            else:
                self._connecting = False
                await self._lost.wait()
                if self._ever_connected:
                    delay = s.reconnect_min_s
            # Full jitter: agents restarted together do not reconnect together.
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
            delay = min(delay * 2, s.reconnect_max_s)

    def _connect_blocking(self) -> None:
        s = self.settings
        props: Properties | None = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = s.session_expiry_s
        # 3.1.1 takes clean_session in the constructor; paho wants its sentinel here.
        clean: bool | Literal[3] = (
            s.session_expiry_s == 0 if self._v5 else paho.MQTT_CLEAN_START_FIRST_ONLY
        )
        rc = self._client.connect(
            s.host, s.port, s.keepalive_s, clean_start=clean, properties=props
        )
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise OSError(f"paho connect: {paho.error_string(rc)}")

    def _log_connect_error(self, exc: BaseException) -> None:
        held = self._limited.allow("connect")
        if held is not None:
            error = connect_error(exc, self.tls)
            log.warning("mqtt_connect_failed", **self._peer, error=error, held_back=held)

    # -- paho's protocol callbacks (on the loop thread) --------------------------------
    def _on_connect(
        self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            log.error("mqtt_connect_refused", **self._peer, reason=str(reason))
            return
        if self._ever_connected:
            metrics.RECONNECTS.labels(self.name).inc()
        self._ever_connected = True
        log.info("mqtt_connected", **self._peer)
        self._unacked_subs.clear()
        for topic_filter, (qos, _) in self._subs.items():
            self._send_subscribe(topic_filter, qos)
        if self._online is not None:
            o = self._online
            self._client.publish(o.topic, o.payload, o.qos, o.retain, self._properties(o))
        self.connected.set()

    def _on_disconnect(
        self, _c: paho.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self._unwritten_qos0.clear()  # paho drops unwritten QoS 0 packets on reconnect
        self._unwritten_bytes = 0
        self._lost.set()
        if was and not self._closing:
            log.warning("mqtt_disconnected", **self._peer, reason=str(reason))

    def _on_message(self, _c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        # paho reads into bytes; the union is for senders
        self._dispatch(msg.topic, cast("bytes", msg.payload))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        """Hand a message to every subscription it matches (QoS 0 ones come here directly)."""
        subs = self._subs
        try:
            if len(subs) == 1:
                for _, handler in subs.values():
                    handler(topic, payload)
                return
            # Like paho's message_callback_add: every subscription that matches gets it.
            for topic_filter, (_, handler) in list(subs.items()):
                if paho.topic_matches_sub(_strip_share(topic_filter), topic):
                    handler(topic, payload)
        except Exception:
            # Raised into paho, it would leave the half-read packet state behind and kill
            # the connection: count it, log it (rate-limited), keep reading.
            metrics.CALLBACK_ERRORS.labels(self.name).inc()
            held = self._limited.allow("handler")
            if held is not None:
                log.exception("mqtt_handler_failed", client=self.name, topic=topic, held_back=held)

    def _on_publish(
        self, _c: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: Properties
    ) -> None:
        self._unwritten_bytes -= self._unwritten_qos0.pop(mid, 0)
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason.is_failure:
            fut.set_exception(
                PublishRefusedError(f"mqtt {self.name}: the broker refused the message: {reason}")
            )
        else:
            fut.set_result(None)

    # -- public -------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int, on_message: OnMessage) -> None:
        """Subscribe now if connected, and again after every (re)connect."""
        self._subs[topic_filter] = (qos, on_message)
        if self.connected.is_set():
            self._send_subscribe(topic_filter, qos)

    def _send_subscribe(self, topic_filter: str, qos: int) -> None:
        rc, mid = self._client.subscribe(topic_filter, qos)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._unacked_subs[mid] = topic_filter
            self._subscribed.clear()

    def _on_subscribe(
        self, _c: paho.Client, _u: object, mid: int, codes: list[ReasonCode], _p: Properties
    ) -> None:
        topic_filter = self._unacked_subs.pop(mid, None)
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            log.error(
                "mqtt_subscribe_refused", client=self.name, topic=topic_filter, reason=refused
            )
        if not self._unacked_subs:
            self._subscribed.set()

    async def wait_subscribed(self) -> None:
        """Return once connected and every subscription so far is acknowledged (SUBACK)."""
        while True:
            await self.connected.wait()
            await self._subscribed.wait()
            if self.connected.is_set() and not self._unacked_subs:
                return

    async def publish(self, msg: Outgoing) -> None:
        """Publish once connected; return when the broker acked (QoS 1+) or it was written.

        Publishes are handed to paho in the order they were called, also across a wait for
        the connection: one called while others wait queues behind them (a FIFO gate), so
        a window of publishes in flight keeps its order through a reconnect.
        """
        if self.connected.is_set() and not self._gated:
            fut = self._send(msg)
        else:
            self._gated += 1  # counted from here: a later publish must not pass us
            try:
                async with self._gate:
                    if not self.connected.is_set():
                        waiters = [
                            asyncio.ensure_future(e.wait()) for e in (self.connected, self._closed)
                        ]
                        try:
                            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for w in waiters:
                                w.cancel()
                    fut = self._send(msg)
            finally:
                self._gated -= 1
        await fut

    def submit(self, msg: Outgoing) -> asyncio.Future[None]:
        """`publish` as a future, without a task while connected: it completes with the ack.

        For a window of publishes in flight, where a task per message costs as much as
        the publish itself.
        """
        if self.connected.is_set() and not self._gated:
            try:
                return self._send(msg)
            except ConnectorError as exc:
                assert self._loop is not None
                fut: asyncio.Future[None] = self._loop.create_future()
                fut.set_exception(exc)
                return fut
        return asyncio.ensure_future(self.publish(msg))

    async def _publish(self, msg: Outgoing) -> None:
        await self._send(msg)

    def _send(self, msg: Outgoing) -> asyncio.Future[None]:
        """Hand `msg` to paho now; the future completes with its ack (or its write)."""
        assert self._loop is not None
        if self._closing and msg is not self._will:
            raise ConnectorError(f"mqtt {self.name}: closing")
        fut: asyncio.Future[None] = self._loop.create_future()
        info = self._client.publish(
            msg.topic, msg.payload, msg.qos, msg.retain, self._properties(msg)
        )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise ConnectorError(
                f"mqtt {self.name}: publish to {msg.topic!r} failed: {paho.error_string(info.rc)}"
            )
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and msg.qos == 0:
            raise ConnectorError(f"mqtt {self.name}: not connected (QoS 0 not sent)")
        self._pending[info.mid] = fut
        return fut

    def publish_nowait(self, topic: str, payload: bytes) -> bool:
        """Send a QoS 0, non-retained message if connected; False if it was dropped."""
        if (
            not self.connected.is_set()
            or len(self._unwritten_qos0) >= _MAX_UNWRITTEN_QOS0
            or self._unwritten_bytes + len(payload) > _MAX_UNWRITTEN_QOS0_BYTES
        ):
            return False
        info = self._client.publish(topic, payload, 0, False)  # noqa: FBT003 - paho's API
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._unwritten_qos0[info.mid] = len(payload)
        self._unwritten_bytes += len(payload)
        return True
