"""Payload mapping: MQTT topic + JSON payload -> readings, as configured in IngestSettings.

A topic pattern names whole levels: `{asset}` (required) and optionally `{signal}`; both
are subscribed to as `+`. A `$share/<group>/` prefix is kept for the subscription and
stripped for matching (the broker delivers the plain topic).

Payloads: one JSON object `{ts, field: number, ...}`, or a batch (a top-level list of such
objects, or an object whose `batch_field` holds the list). A bad message is rejected as a
whole, never half a batch, with one of the reasons in `REASONS`.

What enters here is bounded here: asset and signal names by `max_name_bytes` (they become
topic levels, rows and file names), nesting by the decoder's depth limit (`too_deep`), and
time by plausibility (`clocks.py`): no single message can move an asset's clock.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Final, Literal, get_args

import msgspec

from edge_agent.connectors.clocks import Clocks, Implausible
from edge_agent.connectors.settings import IngestSettings
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Quality, Reading

Reason = Literal[
    "too_large",
    "not_json",
    "too_deep",
    "bad_type",
    "not_finite",
    "no_timestamp",
    "no_match",
    "name_too_long",
    "implausible_ts",
    "empty",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

_SHARE = "$share/"
_ASSET, _SIGNAL = "{asset}", "{signal}"
# Topics seen recently -> (asset, signal); bounded because topics come from outside.
_TOPIC_CACHE_MAX = 4096
_SHOWN = 200  # characters of a topic or name shown in a rejection
_GOOD = Quality.GOOD
_tuple_new = tuple.__new__  # Reading(...) without NamedTuple's keyword handling or _make's call


class Rejected(Exception):  # noqa: N818 - it is a verdict on a message, not a failure of ours
    """A message that cannot become readings; `reason` is one of `REASONS`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


class _Pattern:
    """One configured topic pattern, compiled to the levels that carry asset and signal."""

    def __init__(self, pattern: str) -> None:
        self.source = pattern
        plain = pattern
        if pattern.startswith(_SHARE):
            parts = pattern.split("/", 2)
            if len(parts) < 3 or not parts[1] or not parts[2]:
                raise ConfigError(
                    f"EDGE_INGEST__TOPICS: {pattern!r}: expected $share/<group>/<topic>"
                )
            plain = parts[2]
        self.levels = plain.split("/")
        if self.levels.count(_ASSET) != 1:
            raise ConfigError(
                f"EDGE_INGEST__TOPICS: {pattern!r} must name exactly one whole level {{asset}}"
            )
        if self.levels.count(_SIGNAL) > 1:
            raise ConfigError(f"EDGE_INGEST__TOPICS: {pattern!r} names {{signal}} twice")
        for level in self.levels:
            if level not in (_ASSET, _SIGNAL) and ("{" in level or "}" in level):
                raise ConfigError(
                    f"EDGE_INGEST__TOPICS: {pattern!r}: placeholder {level!r} must be a whole "
                    "level, and only {asset} and {signal} are known"
                )
        if "#" in self.levels[:-1]:
            raise ConfigError(f"EDGE_INGEST__TOPICS: {pattern!r}: '#' must be the last level")
        self.asset_at = self.levels.index(_ASSET)
        self.signal_at = self.levels.index(_SIGNAL) if _SIGNAL in self.levels else -1
        subscribed = ["+" if lv in (_ASSET, _SIGNAL) else lv for lv in self.levels]
        prefix = pattern[: len(pattern) - len(plain)]
        self.subscription = prefix + "/".join(subscribed)

    def match(self, levels: list[str]) -> tuple[str, str | None] | None:
        """Return (asset, signal or None) if the topic's levels match this pattern."""
        mine = self.levels
        multi = mine[-1] == "#"
        if len(levels) != len(mine) and not (multi and len(levels) >= len(mine) - 1):
            return None
        for i, lv in enumerate(mine):
            if lv == "#":
                break
            if lv not in (_ASSET, _SIGNAL, "+") and lv != levels[i]:
                return None
        asset = levels[self.asset_at]
        if not asset:
            return None
        return asset, (levels[self.signal_at] if self.signal_at >= 0 else None)


class PayloadMapper:
    """Decode one MQTT message into readings, or raise `Rejected`."""

    def __init__(self, ingest: IngestSettings, clock: Callable[[], float] = time.time) -> None:
        if not ingest.topics:
            raise ConfigError("EDGE_INGEST__TOPICS: at least one topic pattern is needed")
        self._patterns = [_Pattern(t) for t in ingest.topics]
        self.subscriptions: list[str] = [p.subscription for p in self._patterns]
        self._max = ingest.max_payload_bytes
        self._ts = ingest.ts_field
        self._scale = 1e-3 if ingest.ts_unit == "ms" else 1.0
        self._value = ingest.value_field
        self._batch = ingest.batch_field
        self._signals = dict(ingest.signals)
        self._decode = msgspec.json.Decoder().decode
        self._topics: dict[str, tuple[str, str | None]] = {}
        self._max_name = ingest.max_name_bytes
        self._clocks = Clocks(ingest, clock)

    def route(self, topic: str) -> tuple[str, str | None]:
        """Return (asset, signal or None) named by the topic, or raise Rejected(no_match)."""
        hit = self._topics.get(topic)
        if hit is not None:
            return hit
        levels = topic.split("/")
        for pattern in self._patterns:
            found = pattern.match(levels)
            if found is not None:
                for name in found:
                    if name is not None:
                        self._check_name(name, "topic level")
                if len(self._topics) >= _TOPIC_CACHE_MAX:
                    self._topics.clear()
                self._topics[topic] = found
                return found
        shown = topic if len(topic) <= _SHOWN else f"{topic[:_SHOWN]}... ({len(topic)} chars)"
        raise Rejected("no_match", f"topic {shown!r} matches none of EDGE_INGEST__TOPICS")

    def _check_name(self, name: str, what: str) -> None:
        # Characters before bytes: a name of n characters has at most 4n bytes in UTF-8.
        if len(name) * 4 > self._max_name and len(name.encode("utf-8", "replace")) > self._max_name:
            raise Rejected(
                "name_too_long",
                f"{what} {name[:_SHOWN]!r}... of {len(name.encode('utf-8', 'replace'))} bytes > "
                f"EDGE_INGEST__MAX_NAME_BYTES={self._max_name}",
            )

    def decode(self, topic: str, payload: bytes) -> list[Reading]:
        """Return the readings of one message; raise Rejected for the whole message."""
        if len(payload) > self._max:
            raise Rejected(
                "too_large", f"{len(payload)} bytes > EDGE_INGEST__MAX_PAYLOAD_BYTES={self._max}"
            )
        asset, signal = self.route(topic)
        try:
            doc = self._decode(payload)
        except msgspec.ValidationError as exc:  # msgspec: a number beyond float range
            raise Rejected("not_finite", str(exc)) from None
        except msgspec.DecodeError as exc:
            raise _classify_bad_json(payload, exc) from None
        except RecursionError:
            raise Rejected("too_deep", "JSON nested deeper than the decoder allows") from None
        items = self._items(doc)
        out: list[Reading] = []
        lo, hi = math.inf, -math.inf
        for item in items:
            if not isinstance(item, dict):
                raise Rejected("bad_type", f"batch item is {type(item).__name__}, not an object")
            ts = self._timestamp(item)
            lo, hi = min(lo, ts), max(hi, ts)
            if signal is None:
                self._fields(asset, ts, item, out)
            else:
                self._one(asset, signal, ts, item, out)
        if not out:
            raise Rejected("empty", "no numeric readings in the message")
        try:
            self._clocks.check(asset, lo, hi)
        except Implausible as exc:
            raise Rejected("implausible_ts", str(exc)) from None
        return out

    def _items(self, doc: object) -> list[object]:
        if isinstance(doc, list):
            return doc
        if isinstance(doc, dict):
            inner = doc.get(self._batch)
            if inner is None:
                return [doc]
            if isinstance(inner, list):
                return inner
            raise Rejected("bad_type", f"{self._batch!r} must hold a list")
        raise Rejected("bad_type", f"expected a JSON object or list, got {type(doc).__name__}")

    def _timestamp(self, item: dict[str, object]) -> float:
        ts = item.get(self._ts)
        if ts is None:
            raise Rejected("no_timestamp", f"no {self._ts!r} field (EDGE_INGEST__TS_FIELD)")
        if type(ts) is not float and type(ts) is not int:
            raise Rejected("bad_type", f"{self._ts!r} is {type(ts).__name__}, not a number")
        return ts * self._scale

    def _one(
        self, asset: str, signal: str, ts: float, item: dict[str, object], out: list[Reading]
    ) -> None:
        value = item.get(self._value)
        if value is None:
            return
        if type(value) is not float and type(value) is not int:
            raise Rejected("bad_type", f"{self._value!r} is {type(value).__name__}")
        out.append(_tuple_new(Reading, (asset, signal, ts, float(value), _GOOD)))

    def _fields(self, asset: str, ts: float, item: dict[str, object], out: list[Reading]) -> None:
        if self._signals:
            for field, name in self._signals.items():
                value = item.get(field)
                if value is None:
                    continue
                if type(value) is not float and type(value) is not int:
                    raise Rejected("bad_type", f"{field!r} is {type(value).__name__}")
                out.append(_tuple_new(Reading, (asset, name, ts, float(value), _GOOD)))
            return
        tsf = self._ts
        long_name = self._max_name // 4  # fewer characters than this always fit
        append = out.append
        for field, value in item.items():
            # bool is an int subclass: `type(...) is` keeps true/false out of the numbers.
            if type(value) is float:
                number = value
            elif type(value) is int:
                number = float(value)
            else:
                continue
            if field == tsf:
                continue
            if len(field) > long_name:
                self._check_name(field, "field")
            append(_tuple_new(Reading, (asset, field, ts, number, _GOOD)))


def _classify_bad_json(payload: bytes, exc: msgspec.DecodeError) -> Rejected:
    """Tell NaN/Infinity (which Python senders write) apart from text that is not JSON."""
    try:
        doc = json.loads(payload)
    except RecursionError:
        return Rejected("too_deep", "JSON nested deeper than the decoder allows")
    except ValueError:
        return Rejected("not_json", str(exc))
    if _has_non_finite(doc):
        return Rejected("not_finite", "NaN or Infinity in the payload")
    return Rejected("not_json", str(exc))  # pragma: no cover - msgspec is the stricter parser


def _has_non_finite(doc: object) -> bool:
    # A stack, not recursion: json.loads takes nesting deeper than Python's recursion limit.
    todo = [doc]
    while todo:
        x = todo.pop()
        if isinstance(x, float):
            if not math.isfinite(x):
                return True
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
    return False
