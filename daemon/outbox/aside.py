"""Messages that can never be delivered: checked where they enter, moved aside when they fail.

A message is undeliverable when MQTT cannot carry it (a topic over 65,535 bytes of UTF-8,
empty, or holding a wildcard or a NUL; a packet over MQTT's 256 MiB), when it could never
fit the outbox (topic and payload over half of EDGE_OUTBOX__MAX_BYTES), or when
publishing it fails for a reason of its own (paho raises on it, the broker refuses it).
Such a message never blocks its queue: it is moved aside, counted by priority and reason
(`edge_outbox_aside_total`), logged (one line per reason per 10 s, with the count held
back), and kept for inspection: in the outbox file's `aside` table (`store.ASIDE_MAX_ROWS`
newest, the first `ASIDE_PAYLOAD_BYTES` of each payload), or in memory while the file
cannot be written.
"""

from __future__ import annotations

import collections
import time
from typing import Final, Literal, NamedTuple

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing

log = structlog.get_logger(__name__)

Why = Literal["topic_too_long", "topic_invalid", "too_large", "refused", "publish_error"]
MQTT_MAX_TOPIC_BYTES: Final = 65_535
MQTT_MAX_PACKET: Final = 268_435_455  # the largest remaining length MQTT can encode
_PACKET_OVERHEAD: Final = 1024  # fixed header, packet id, properties (the msg_id property)
_SHOWN_TOPIC_CHARS: Final = 200  # of a topic in a log line
MEMORY_MAX: Final = 256  # copies kept in memory while the file cannot be written
ASIDE_PAYLOAD_BYTES: Final = 16 * 1024  # of a payload kept in the file's table `aside`
ASIDE_TOPIC_CHARS: Final = 1024  # of a topic (and of an asset) kept there


class Undeliverable(NamedTuple):
    """Why one message can never be delivered: a metric label and the detail a person reads."""

    why: Why
    detail: str


def check(msg: Outgoing, max_bytes: int) -> Undeliverable | None:
    """Why `msg` can never be delivered through an outbox of `max_bytes`, or None."""
    topic = msg.topic.encode("utf-8", "surrogatepass")
    if len(topic) > MQTT_MAX_TOPIC_BYTES:
        return Undeliverable(
            "topic_too_long", f"topic of {len(topic)} bytes > MQTT's {MQTT_MAX_TOPIC_BYTES}"
        )
    if not topic or b"+" in topic or b"#" in topic or b"\0" in topic:
        return Undeliverable("topic_invalid", "empty, or holds a wildcard (+ #) or a NUL")
    size = len(topic) + len(msg.payload)
    if size + _PACKET_OVERHEAD > MQTT_MAX_PACKET:
        return Undeliverable("too_large", f"{size} bytes > MQTT's packet limit")
    if size > max_bytes // 2:
        return Undeliverable(
            "too_large", f"{size} bytes > half of EDGE_OUTBOX__MAX_BYTES={max_bytes}"
        )
    return None


class Aside(NamedTuple):
    """One message moved aside."""

    msg: Outgoing
    why: Undeliverable
    at: float  # wall time it was moved aside


class AsideLog:
    """Counts and logs what is moved aside; holds the copies while the file cannot."""

    def __init__(self) -> None:
        self.memory: collections.deque[Aside] = collections.deque(maxlen=MEMORY_MAX)
        self._limited = RateLimited(10.0)

    def note(self, msg: Outgoing, why: Undeliverable, kept: str) -> Aside:
        """Count and log one message moved aside; `kept` says where its copy is."""
        metrics.OUTBOX_ASIDE.labels(msg.priority.name.lower(), why.why).inc()
        held = self._limited.allow(why.why)
        if held is not None:
            topic = msg.topic
            shown = topic[:_SHOWN_TOPIC_CHARS] + ("..." if len(topic) > _SHOWN_TOPIC_CHARS else "")
            log.error(
                "outbox_moved_aside",
                reason=why.why,
                detail=why.detail,
                msg_id=msg.msg_id,
                asset=msg.key[:_SHOWN_TOPIC_CHARS],
                priority=msg.priority.name.lower(),
                topic=shown,
                topic_chars=len(topic),
                payload_bytes=len(msg.payload),
                kept=kept,
                held_back=held,
            )
        return Aside(msg, why, time.time())

    def keep_in_memory(self, items: list[Aside]) -> None:
        """Hold copies in memory (bounded: the oldest go first)."""
        self.memory.extend(items)


def row(item: Aside) -> tuple[object, ...]:
    """The row of the outbox file's table `aside` that keeps `item` (cut to the bounds)."""
    msg = item.msg
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(item.at))
    return (
        at,
        item.why.why,
        item.why.detail,
        int(msg.priority),
        msg.msg_id,
        msg.key[:ASIDE_TOPIC_CHARS],
        msg.topic[:ASIDE_TOPIC_CHARS],
        len(msg.topic),
        msg.payload[:ASIDE_PAYLOAD_BYTES],
        len(msg.payload),
    )
