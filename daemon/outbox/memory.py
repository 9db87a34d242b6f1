"""The outbox in memory: its bounded queue while the file cannot be written, and its drops.

The page-at-a-time delivery of that degraded mode publishes with `publish_batch`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority
from edge_agent.daemon.outbox.window import undeliverable

if TYPE_CHECKING:
    from edge_agent.core.ports import Sink
    from edge_agent.daemon.outbox.aside import Undeliverable

log = structlog.get_logger(__name__)

_CLASSES: Final = sorted(Priority, reverse=True)  # replay order: highest class first


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


async def publish_batch(
    sink: Sink, batch: Sequence[Outgoing]
) -> tuple[list[Outgoing], list[tuple[Outgoing, Undeliverable]]]:
    """Publish a batch concurrently (paho keeps their order).

    Returns the messages acknowledged, and those that can never be delivered with why
    (`window.undeliverable`); those that failed for the link are left for the next try.
    """
    results = await asyncio.gather(*(sink.publish(m) for m in batch), return_exceptions=True)
    done: list[Outgoing] = []
    bad: list[tuple[Outgoing, Undeliverable]] = []
    for msg, result in zip(batch, results, strict=True):
        if result is None:
            done.append(msg)
        elif (why := undeliverable(msg, result)) is not None:
            bad.append((msg, why))
    return done, bad
