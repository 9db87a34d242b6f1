"""The outbox: every outgoing message waits here until the uplink broker acknowledged it.

Replay order: priority class (highest first), then time; messages of one class keep their
order, so per-asset order holds within a class. When full, the lowest class is dropped
first, oldest first within a class; every drop is counted (`OUTBOX_DROPPED`) and logged.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from edge_agent.daemon import metrics
from edge_agent.daemon.errors import ConnectorError
from edge_agent.daemon.logs import RateLimited
from edge_agent.daemon.readings import Outgoing, Priority
from edge_agent.daemon.settings import OutboxSettings

if TYPE_CHECKING:
    from edge_agent.connectors.mqtt import MqttSink

log = structlog.get_logger(__name__)

_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 30.0
_CLASSES: Final = sorted(Priority, reverse=True)  # replay order: highest class first


class Outbox(Protocol):
    """Where outgoing messages wait for the uplink."""

    async def put(self, msgs: Sequence[Outgoing]) -> None:
        """Store messages; once it returns they survive what the outbox promises."""
        ...

    async def deliver(self, sink: MqttSink) -> None:
        """Publish in order until cancelled; remove a message only after its ack."""
        ...

    def depth(self) -> int:
        """Messages waiting (including those in flight)."""
        ...

    async def close(self) -> None:
        """Release files; messages not yet acknowledged stay for the next start."""
        ...


class MemoryQueue:
    """A bounded queue per priority class, with the outbox's drop policy.

    Also the outbox's fallback while its file cannot be written.
    """

    def __init__(self, max_messages: int, what: str = "outbox") -> None:
        self._max = max_messages
        self._what = what
        self._q: dict[Priority, collections.deque[Outgoing]] = {
            p: collections.deque() for p in Priority
        }
        self._n = 0
        self._limited = RateLimited(10.0)

    def __len__(self) -> int:
        return self._n

    def push(self, msgs: Iterable[Outgoing]) -> None:
        """Append messages; drop the lowest class, oldest first, beyond the cap."""
        for msg in msgs:
            self._q[msg.priority].append(msg)
            self._n += 1
        while self._n > self._max:
            for p in reversed(_CLASSES):  # lowest class first
                if self._q[p]:
                    dropped = self._q[p].popleft()
                    self._n -= 1
                    count_drop(dropped, self._what, self._limited, f"max_messages={self._max}")
                    break

    def head(self, n: int) -> list[Outgoing]:
        """The next `n` messages in replay order (not removed)."""
        out: list[Outgoing] = []
        for p in _CLASSES:
            for msg in self._q[p]:
                if len(out) >= n:
                    return out
                out.append(msg)
        return out

    def remove(self, msgs: Iterable[Outgoing]) -> None:
        """Remove delivered messages (those dropped meanwhile are already gone)."""
        for msg in msgs:
            q = self._q[msg.priority]
            if q and q[0] is msg:
                q.popleft()
            else:
                try:
                    q.remove(msg)
                except ValueError:
                    continue
            self._n -= 1


def count_drop(msg: Outgoing, where: str, limited: RateLimited, why: str) -> None:
    """Count and log (rate-limited) one message dropped by the outbox's policy."""
    name = msg.priority.name.lower()
    metrics.OUTBOX_DROPPED.labels(name).inc()
    held = limited.allow(name)
    if held is not None:
        log.warning(
            "outbox_dropped",
            where=where,
            priority=name,
            topic=msg.topic,
            msg_id=msg.msg_id,
            asset=msg.key,
            why=why,
            held_back=held,
        )


async def publish_batch(sink: MqttSink, batch: Sequence[Outgoing]) -> list[Outgoing]:
    """Publish a batch concurrently (paho keeps their order); return those acknowledged.

    A message the broker refuses (MQTT 5 reason >= 0x80) will never be accepted: it
    counts as done, and is counted and logged as refused.
    """
    from edge_agent.connectors.mqtt import PublishRefusedError  # noqa: PLC0415 - no import cycle

    results = await asyncio.gather(*(sink.publish(m) for m in batch), return_exceptions=True)
    done: list[Outgoing] = []
    for msg, result in zip(batch, results, strict=True):
        if result is None:
            done.append(msg)
        elif isinstance(result, PublishRefusedError):
            metrics.OUTBOX_REFUSED.labels(msg.priority.name.lower()).inc()
            log.error(
                "outbox_refused",
                topic=msg.topic,
                msg_id=msg.msg_id,
                asset=msg.key,
                error=str(result),
            )
            done.append(msg)
        elif isinstance(result, ConnectorError):
            log.warning("outbox_publish_failed", topic=msg.topic, error=str(result))
        else:
            raise result
    return done


class MemoryOutbox:
    """An outbox in memory only: bounded, with the drop policy; lost on restart."""

    def __init__(self, settings: OutboxSettings) -> None:
        self._q = MemoryQueue(settings.max_messages)
        self._ready = asyncio.Event()

    async def put(self, msgs: Sequence[Outgoing]) -> None:
        """Queue messages (memory only: they do not survive a restart)."""
        self._q.push(msgs)
        metrics.OUTBOX_DEPTH.set(len(self._q))
        if msgs:
            self._ready.set()

    async def deliver(self, sink: MqttSink) -> None:
        """Publish in replay order until cancelled; remove each only after its ack."""
        delay = _RETRY_MIN_S
        while True:
            batch = self._q.head(sink.window)
            if not batch:
                self._ready.clear()
                await self._ready.wait()
                continue
            done = await publish_batch(sink, batch)
            self._q.remove(done)
            metrics.OUTBOX_DEPTH.set(len(self._q))
            if len(done) < len(batch):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                delay = _RETRY_MIN_S

    def depth(self) -> int:
        """Messages waiting, including those in flight."""
        return len(self._q)

    async def close(self) -> None:
        """Nothing to release; what is still queued is lost."""


def open_outbox(settings: OutboxSettings, state_dir: Path) -> Outbox:
    """Open the outbox in `state_dir`."""
    del state_dir  # stage 1 keeps messages in memory
    return MemoryOutbox(settings)
