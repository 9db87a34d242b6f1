"""The values that flow through the agent: readings in, outgoing messages out."""

from __future__ import annotations

import enum
import os
import time
from typing import NamedTuple


class Quality(enum.IntEnum):
    """OPC UA style quality of one reading; only GOOD values enter a model window."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Reading(NamedTuple):
    """One value of one signal of one asset at one time (seconds since the epoch)."""

    asset: str
    signal: str
    ts: float
    value: float
    quality: Quality = Quality.GOOD


class Priority(enum.IntEnum):
    """Outbox priority class: a full outbox drops the lowest class first."""

    DIGEST = 0
    STATUS = 1
    ESCALATION = 2
    RECOMMENDATION = 3


class Outgoing(NamedTuple):
    """A message bound for the uplink; `msg_id` lets consumers de-duplicate."""

    topic: str
    payload: bytes
    msg_id: str
    key: str = ""
    priority: Priority = Priority.RECOMMENDATION
    qos: int = 1
    retain: bool = False


_last_ms = 0
_seq = 0


def new_id() -> str:
    """Return a unique id in UUIDv7 layout, monotonic within this process.

    48 bits of Unix milliseconds, a 12-bit sequence that orders ids made in the same
    millisecond (RFC 9562, method 1), then 62 random bits.
    """
    global _last_ms, _seq  # noqa: PLW0603 - the sequence is process-wide by definition
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        _seq += 1
        if _seq > 0xFFF:  # sequence exhausted: borrow the next millisecond
            _last_ms += 1
            _seq = 0
        ms = _last_ms
    else:
        _last_ms, _seq = ms, 0
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= _seq << 64
    value |= 0b10 << 62
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class SignalStats(NamedTuple):
    """Statistics of one signal over one window, against the asset's normal baseline."""

    mean: float
    rms: float
    min: float
    max: float
    slope: float  # units per second, least squares over the window
    baseline: float  # the asset's normal mean of this signal (EWMA over normal windows)
    change_pct: float  # (mean - baseline) / |baseline| * 100


class WindowResult(NamedTuple):
    """What the scorer and the window statistics say about one window of one asset."""

    asset: str
    ts: float  # end of the window, seconds since the epoch
    score: float
    threshold: float
    contrib: dict[str, float]  # signal -> signed contribution (positive: above normal)
    probs: dict[str, float]  # fault class -> probability
    stats: dict[str, SignalStats]

    @property
    def anomalous(self) -> bool:
        """Whether the model's score passes its calibrated threshold."""
        return self.score > self.threshold
