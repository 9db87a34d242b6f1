"""OPC UA source: subscriptions or batched polling on asyncua, with its own reconnect loop.

Each session is a fresh asyncua Client: connect, resolve the node map, then either one
subscription with every monitored item or a read loop. When the server goes away the
session ends, its client is closed, and the loop connects again after a jittered, capped
backoff; a new session creates exactly one new subscription, so nothing is duplicated.

Readings wait in a bounded buffer between asyncua's publish callback and `batches()`. When
it is full the oldest reading is dropped (counted, reason `opcua_buffer_full`): a live
anomaly check needs the newest values more than an old backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Self

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UASocketProtocol
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaError

from edge_agent.connectors.opcua_nodes import (
    MappedNode,
    chunks,
    monitor_requests,
    operation_limits,
    parse_node_map,
    read_requests,
    readings_of,
    resolve,
    subscription_parameters,
    to_reading,
)
from edge_agent.connectors.opcua_publish import Publish, PublishLoop
from edge_agent.connectors.opcua_security import (
    UntrustedCertificateError,
    apply_security,
    check_files,
    hint,
)
from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core import metrics
from edge_agent.core.errors import ConfigError, ConnectorError
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Reading

log = structlog.get_logger(__name__)
# PublishRequests kept queued at the server (see opcua_publish): while the client reads one
# answer the server can send the next; 3 is the usual client default, servers allow more.
PUBLISH_REQUESTS = 3


class OpcUaSource:
    """Readings from an OPC UA server; an async context manager; reconnection lives inside.

    A `Source` named `opcua`: its link is up from "OPC UA session up" until the session
    ends (the server went away, stopped answering, or closed the subscription).
    """

    name = "opcua"

    def __init__(self, settings: OpcUaSettings) -> None:
        check_files(settings)
        self._settings = settings
        self._nodes = parse_node_map(settings.nodes)
        self._buf: deque[Reading] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limited = RateLimited(settings.log_interval_s)
        self._reported: set[str] = set()  # node names already reported missing
        self._last_ts: dict[tuple[str, str], float] = {}  # newest timestamp handed on
        self._sessions = 0
        self._lost_at: float | None = None  # monotonic time the last session ended
        self._last_rx: float | None = None  # monotonic time of the newest reading
        self._last_publish = 0.0  # monotonic time of the newest publish response
        self.last_error: str | None = None
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="opcua-source")
        self._task.add_done_callback(lambda _: self._ready.set())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task = self._task
        if task is None:
            return
        # asyncua swallows a CancelledError that lands inside its disconnect (it cancels
        # its own tasks and ignores what comes back), so one cancel may not be enough.
        for _ in range(3):
            task.cancel()
            await asyncio.wait({task}, timeout=self._settings.timeout_s + 1)
            if task.done():
                break
        else:
            log.error("OPC UA source did not stop", endpoint=self._settings.endpoint)
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error

    async def wait_ready(self) -> None:
        """Return once a session is up and readings can flow."""
        await self.connected.wait()

    async def batches(self) -> AsyncIterator[list[Reading]]:
        """Yield readings in arrival order, at most `max_batch` at a time."""
        limit = self._settings.max_batch
        while True:
            while not self._buf:
                if self._task is None or self._task.done():
                    cause = (
                        self._task.exception()
                        if self._task is not None and not self._task.cancelled()
                        else None
                    )
                    raise ConnectorError(
                        "OPC UA source is not running (use it as `async with`)"
                    ) from cause
                self._ready.clear()
                await self._ready.wait()
            batch = [self._buf.popleft() for _ in range(min(limit, len(self._buf)))]
            metrics.READINGS_IN.labels("opcua").inc(len(batch))
            metrics.OPCUA_BUFFERED.set(len(self._buf))
            yield batch

    # -- the reconnect loop --------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._settings.reconnect_min_s
        while True:
            started = time.monotonic()
            try:
                await self._session()
                metrics.OPCUA_FAILURES.labels("session_lost").inc()  # logged by on_lost
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever asyncua raises, the loop must go on
                self._failed(exc)
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise asyncio.CancelledError  # a cancel asyncua swallowed while closing
            if time.monotonic() - started > 2 * self._settings.reconnect_max_s:
                delay = self._settings.reconnect_min_s  # the session was healthy for a while
            # Full jitter keeps a fleet of gateways from reconnecting in lockstep.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311
            delay = min(delay * 2, self._settings.reconnect_max_s)

    def _failed(self, exc: Exception) -> None:
        kind = "connect"
        if isinstance(exc, UntrustedCertificateError):
            kind = "untrusted_certificate"
        elif isinstance(exc, ConfigError):
            kind = "config"
        metrics.OPCUA_FAILURES.labels(kind).inc()
        self.last_error = str(exc) or type(exc).__name__
        if advice := hint(exc, self._settings):
            self.last_error = f"{advice}: {self.last_error}"
        held = self._limited.allow(kind)
        if held is not None:
            log.warning(
                "OPC UA connection failed, retrying",
                endpoint=self._settings.endpoint,
                error=self.last_error,
                error_type=type(exc).__name__,
                suppressed=held,
            )

    async def _session(self) -> None:
        s = self._settings
        client = Client(s.endpoint, timeout=s.timeout_s, watchdog_intervall=s.watchdog_s)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            log.info("OPC UA connection lost", endpoint=s.endpoint, error=repr(exc))
            lost.set()

        client.connection_lost_callback = on_lost
        connected = False
        try:
            await apply_security(client, s)
            await client.connect()
            connected = True
            limits = await operation_limits(client)
            nodes = await self._resolve(client, limits)
            self._sessions += 1
            if self._sessions > 1:
                metrics.RECONNECTS.labels("opcua").inc()
            down = None if self._lost_at is None else time.monotonic() - self._lost_at
            log.info(
                "OPC UA session up",
                endpoint=s.endpoint,
                mode=s.mode,
                nodes=len(nodes),
                down_s=None if down is None else round(down, 1),
            )
            self.last_error = None
            self.connected.set()
            if not nodes:
                await lost.wait()
            elif s.mode == "subscription":
                await self._subscription(client, nodes, limits["monitor"], lost)
            else:
                await self._poll(client, nodes, limits["read"], lost)
        finally:
            self.connected.clear()
            if self._lost_at is None:
                self._lost_at = time.monotonic()
            if connected:
                await self._close(client)

    async def _close(self, client: Client) -> None:
        # Closing the session also cancels asyncua's publish loop, which would otherwise
        # keep retrying on the dead link.
        try:
            await asyncio.wait_for(client.disconnect(), self._settings.timeout_s)
        except (OSError, TimeoutError, UaError, ConnectionError) as exc:
            log.debug("OPC UA disconnect incomplete", error=repr(exc))

    async def _resolve(self, client: Client, limits: dict[str, int]) -> list[MappedNode]:
        found, missing = await resolve(client, self._nodes, limits)
        for node, reason in missing:
            self._report_once(node, reason)
        metrics.OPCUA_NODES.labels("active").set(len(found))
        metrics.OPCUA_NODES.labels("missing").set(len(missing))
        return found

    # -- subscription mode ---------------------------------------------------------------

    async def _watch(
        self,
        lost: asyncio.Event,
        silent_limit: float,
        loop: PublishLoop,
        requests: list[asyncio.Task[None]],
    ) -> None:
        """Return when the link is lost; raise if the server stops answering publishes.

        A server sends at least a keep-alive every keep-alive period; a longer silence means
        the subscription died on the server while the connection looked fine.
        """
        while not lost.is_set():
            # Not wait_for: under 3.11 it swallows a cancellation that comes as the event
            # is set, and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(silent_limit / 3):
                    await lost.wait()
            for task in requests:
                if task.done() and not task.cancelled() and (error := task.exception()):
                    raise error
            silent = time.monotonic() - self._last_publish
            if not lost.is_set() and (silent > silent_limit or not loop.active):
                raise ConnectorError(
                    f"no publish response from {self._settings.endpoint} for {silent:.0f} s; "
                    "the subscription is presumed lost"
                )

    async def _subscription(
        self, client: Client, nodes: Sequence[MappedNode], per_call: int, lost: asyncio.Event
    ) -> None:
        """Subscribe, then keep PublishRequests queued at the server until the link ends."""
        handles = dict(enumerate(nodes))

        def on_publish(publish: Publish) -> None:
            self._on_publish(publish, handles, lost)

        protocol = client.uaclient.protocol
        if protocol is None:
            raise ConnectionError("the OPC UA connection closed while subscribing")
        loop = PublishLoop(protocol.send_request, on_publish)
        silent_limit = await self._subscribe(client, protocol, handles, per_call)
        requests = [
            asyncio.create_task(self._request(loop, lost), name="opcua-publish")
            for _ in range(PUBLISH_REQUESTS)
        ]
        try:
            await self._watch(lost, silent_limit, loop, requests)
        finally:
            for task in requests:
                task.cancel()
            await asyncio.gather(*requests, return_exceptions=True)

    @staticmethod
    async def _request(loop: PublishLoop, lost: asyncio.Event) -> None:
        try:
            await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            lost.set()  # wakes _watch, which raises what this task ended with
            raise

    async def _subscribe(
        self,
        client: Client,
        protocol: UASocketProtocol,
        handles: dict[int, MappedNode],
        per_call: int,
    ) -> float:
        """Create the session's one subscription; return how long it may stay silent."""
        s = self._settings
        request = ua.CreateSubscriptionRequest()
        request.Parameters = subscription_parameters(s)
        self._last_publish = time.monotonic()
        response = struct_from_binary(
            ua.CreateSubscriptionResponse, await protocol.send_request(request)
        )
        response.ResponseHeader.ServiceResult.check()
        sub = response.Parameters
        requests = monitor_requests(handles, s)
        for part in chunks(requests, per_call):
            results = await client.uaclient.create_monitored_items(
                ua.CreateMonitoredItemsParameters(
                    SubscriptionId=sub.SubscriptionId,
                    ItemsToCreate=list(part),
                    TimestampsToReturn=ua.TimestampsToReturn.Both,
                )
            )
            for item, result in zip(part, results, strict=True):
                if not result.StatusCode.is_good():
                    node = handles.pop(item.RequestedParameters.ClientHandle)
                    self._report_once(node, f"cannot be monitored ({result.StatusCode.name})")
        keepalive_s = (
            float(sub.RevisedPublishingInterval) * int(sub.RevisedMaxKeepAliveCount) / 1000
        )
        return 3 * keepalive_s + self._settings.timeout_s

    def _on_publish(
        self, publish: Publish, handles: dict[int, MappedNode], lost: asyncio.Event
    ) -> None:
        received = time.time()
        self._last_publish = time.monotonic()  # keep-alives count: the server is there
        self._push(readings_of(publish.changes, handles, received))
        for notification in publish.other:
            if isinstance(notification, ua.StatusChangeNotification):
                # The server closed the subscription (or asyncua reports the link down).
                log.warning("OPC UA subscription status", status=notification.Status.name)
                if not notification.Status.is_good():
                    lost.set()

    # -- polling mode --------------------------------------------------------------------

    async def _poll(
        self, client: Client, nodes: Sequence[MappedNode], server_limit: int, lost: asyncio.Event
    ) -> None:
        s = self._settings
        size = min(s.max_nodes_per_read, server_limit) if server_limit else s.max_nodes_per_read
        reads = read_requests(nodes, size)
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not lost.is_set():
            for part, params in reads:
                values = await client.uaclient.read(params)
                received = time.time()
                self._push(
                    (node, to_reading(node, dv, received))
                    for node, dv in zip(part, values, strict=True)
                )
            due = max(due + s.poll_interval_s, loop.time())
            # Not wait_for: under 3.11 it swallows a cancellation that comes as the event
            # is set, and this loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(due - loop.time()):
                    await lost.wait()

    # -- the buffer ----------------------------------------------------------------------

    def _push(self, readings: Iterable[tuple[MappedNode, Reading | None]]) -> None:
        last_ts, buf, limit = self._last_ts, self._buf, self._settings.max_buffered
        before = len(buf)
        for node, reading in readings:
            if reading is None:
                self._drop("opcua_not_numeric", node)
                continue
            key = (reading.asset, reading.signal)
            if reading.ts <= last_ts.get(key, -math.inf):
                # A value seen before: a poll of an unchanged node, or the value a server
                # re-sends when a new subscription starts. Not a loss, so logged at debug.
                self._drop("opcua_repeated", node, level="debug")
                continue
            last_ts[key] = reading.ts
            if len(buf) >= limit:
                buf.popleft()
                before -= 1
                self._drop("opcua_buffer_full", node)
            buf.append(reading)
        if len(buf) == before:
            return
        now = time.monotonic()
        if self._lost_at is not None and self._last_rx is not None:
            log.info(
                "OPC UA readings resumed",
                endpoint=self._settings.endpoint,
                gap_s=round(now - self._last_rx, 1),
                outage_s=round(now - self._lost_at, 1),
            )
        self._lost_at = None
        self._last_rx = now
        self._ready.set()

    def _drop(self, reason: str, node: MappedNode, *, level: str = "warning") -> None:
        metrics.READINGS_DROPPED.labels(reason).inc()
        if (held := self._limited.allow(reason)) is not None:
            log.log(
                logging.DEBUG if level == "debug" else logging.WARNING,
                "OPC UA reading dropped",
                reason=reason,
                node=node.name,
                suppressed=held,
            )

    def _report_once(self, node: MappedNode, reason: str) -> None:
        if node.name not in self._reported:
            self._reported.add(node.name)
            log.error(
                "OPC UA node skipped",
                node=node.name,
                asset=node.asset,
                signal=node.signal,
                reason=reason,
            )
