"""Sparkplug B sessions: what each edge node and device said in its birth, turned into readings.

The rules this module keeps (Sparkplug B 3.0, the host application's side):
- A node's NBIRTH and each device's DBIRTH name their metrics, with datatypes and aliases;
  data messages (NDATA, DDATA) carry values by alias or by name and are read only through
  the latest birth. A new NBIRTH forgets the node's devices (they are born again after it);
  a new DBIRTH replaces the device's metrics, aliases included.
- Data before any birth, an alias no birth named, or a gap in the node's `seq` (0..255,
  one step per message) asks the node for a rebirth (`want_rebirth`); the caller sends it,
  rate-limited. Data of an unborn node or device is counted and dropped.
- NDEATH (whose bdSeq matches the NBIRTH's; an older one is a stale Will) and DDEATH make
  every signal of the node, or of the device, a BAD reading at once, just after its last
  reading: frames hold no value across a death, so no window is scored from held values.
- What is learned is bounded by `max_metrics` over all births; a birth past it is refused
  (counted), its device kept as a placeholder whose data is dropped without a rebirth.

Payloads are decoded by the protobuf library over the specification's `sparkplug_b.proto`
(`sparkplug_b_pb2.py`, generated); nothing here touches MQTT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from google.protobuf.message import DecodeError

from edge_agent.connectors.settings import SparkplugSettings
from edge_agent.connectors.sparkplug_b_pb2 import Payload
from edge_agent.core.readings import Quality, Reading

NAMESPACE: Final = "spBv1.0"
BOOLEAN: Final = 11
_new_reading = Reading._make
_GOOD, _BAD, _UNCERTAIN = Quality.GOOD, Quality.BAD, Quality.UNCERTAIN
_NAN = math.nan
# Sparkplug B datatypes (specification 6.4.16); Boolean is 11.
_INT8, _INT16, _INT32, _INT64, _UINT8, _UINT16, _UINT32, _UINT64, _FLOAT, _DOUBLE = range(1, 11)
# Datatypes that become readings -> the field their value travels in and, for a signed
# integer, its width: Sparkplug carries it as two's complement in an unsigned field.
# Strings, bytes, datasets, templates and DateTime are not readings.
_NUMERIC: Final[dict[int, tuple[str, int]]] = {
    _INT8: ("int_value", 8),
    _INT16: ("int_value", 16),
    _INT32: ("int_value", 32),
    _INT64: ("long_value", 64),
    _UINT8: ("int_value", 0),
    _UINT16: ("int_value", 0),
    _UINT32: ("int_value", 0),
    _UINT64: ("long_value", 0),
    _FLOAT: ("float_value", 0),
    _DOUBLE: ("double_value", 0),
    BOOLEAN: ("boolean_value", 0),
}
_DEATH_AFTER_S = 1e-3  # a death is dated just after the last reading it ends


class SparkplugRejected(Exception):  # noqa: N818 - a verdict on a message, like mapping.Rejected
    """A message that cannot be read at all: dead-lettered under `reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Topic(NamedTuple):
    """spBv1.0/<group>/<kind>/<node>[/<device>]."""

    group: str
    kind: str
    node: str
    device: str


_KINDS: Final = frozenset({"NBIRTH", "NDEATH", "NDATA", "DBIRTH", "DDEATH", "DDATA"})
_COMMANDS: Final = frozenset({"NCMD", "DCMD"})


def parse_topic(topic: str) -> Topic | None:
    """The parts of a Sparkplug topic; None for commands and STATE (nothing to read)."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != NAMESPACE:
        raise SparkplugRejected("bad_topic", f"{topic!r} is not spBv1.0/<group>/<kind>/...")
    if levels[1] == "STATE" or levels[2] in _COMMANDS:
        return None
    n = len(levels)
    kind = levels[2]
    if kind not in _KINDS or n != (5 if kind[0] == "D" else 4) or not all(levels):
        raise SparkplugRejected("bad_topic", f"{topic!r}: expected spBv1.0/<group>/{kind}/...")
    return Topic(levels[1], kind, levels[3], levels[4] if n == 5 else "")


def decode(payload: bytes) -> Payload:
    """The protobuf payload, or SparkplugRejected("not_protobuf")."""
    try:
        return Payload.FromString(payload)
    except DecodeError as exc:
        raise SparkplugRejected("not_protobuf", str(exc)) from None


class _Metric(NamedTuple):
    signal: str | None  # None: known to the birth, not a reading
    field: str  # where its value travels (see _NUMERIC)
    bits: int  # signed integer width, 0 for the others


@dataclass(slots=True)
class _Device:
    """The metrics one birth named, under one asset."""

    asset: str
    by_alias: dict[int, _Metric]
    by_name: dict[str, _Metric]
    last_ts: float = 0.0  # latest reading time: a death is dated just after it
    refused: bool = False  # its birth did not fit in max_metrics: its data is not read

    @property
    def size(self) -> int:
        return len(self.by_name) + 1


@dataclass(slots=True)
class _Node:
    seq: int
    bd_seq: int | None
    own: _Device | None  # the node's own metrics, when EDGE_SPARKPLUG__NODE_ASSET is set
    devices: dict[str, _Device] = field(default_factory=dict)


class Sessions:
    """Every edge node's session: `handle` turns one message into readings.

    `events` counts what happened by kind (birth, death, stale_death, seq_gap, unborn,
    unknown_alias, birth_refused) and tells `on_event`; `want_rebirth` receives (group,
    node) whenever a node should be asked to publish its births again.
    """

    def __init__(
        self,
        settings: SparkplugSettings,
        want_rebirth: Callable[[str, str], None],
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        self._settings = settings
        self._want_rebirth = want_rebirth
        self._on_event = on_event
        self._signals = dict(settings.signals)
        self._ignore = tuple(settings.ignore)
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._learned = 0
        self.events: dict[str, int] = {}

    @property
    def learned(self) -> int:
        """Metrics (plus one per node and device) held from births."""
        return self._learned

    def handle(self, topic: str, payload: bytes, now: float) -> list[Reading]:
        """The readings of one message (`now`: wall-clock seconds, for undated values)."""
        limit = self._settings.max_payload_bytes
        if len(payload) > limit:
            raise SparkplugRejected(
                "too_large", f"{len(payload)} bytes > EDGE_SPARKPLUG__MAX_PAYLOAD_BYTES={limit}"
            )
        t = parse_topic(topic)
        if t is None:
            return []
        p = decode(payload)
        if t.kind == "NBIRTH":
            return self._node_birth(t, p, now)
        node = self._nodes.get((t.group, t.node))
        if node is None:
            return self._unborn(t)
        if t.kind == "NDEATH":
            return self._node_death(t, node, p)
        self._check_seq(t, node, p)
        return self._device_message(t, node, p, now)

    def _unborn(self, t: Topic) -> list[Reading]:
        """Data nothing was born for: ask for the births (a death needs nothing)."""
        if not t.kind.endswith("DEATH"):
            self._event("unborn")
            self._want_rebirth(t.group, t.node)
        return []

    def _device_message(self, t: Topic, node: _Node, p: Payload, now: float) -> list[Reading]:
        kind = t.kind
        if kind == "NDATA":
            return [] if node.own is None else self._values(t, node.own, p, now)
        if kind == "DBIRTH":
            return self._device_birth(t, node, p, now)
        device = node.devices.get(t.device)
        if device is None:
            return self._unborn(t)
        if kind == "DDATA":
            if device.refused:
                return []
            return self._values(t, device, p, now)
        del node.devices[t.device]  # DDEATH
        self._forget(device)
        self._event("death")
        return _stale([device])

    # -- births and deaths ----------------------------------------------------------------
    def _node_birth(self, t: Topic, p: Payload, now: float) -> list[Reading]:
        key = (t.group, t.node)
        old = self._nodes.pop(key, None)
        if old is not None:
            self._forget_node(old)
        if self._learned + 1 > self._settings.max_metrics:
            self._event("birth_refused")
            return []
        template = self._settings.node_asset
        own = None
        if template:
            own = self._learn(template.format(group=t.group, node=t.node), p)
            if own is not None and own.refused:
                self._forget(own)
                own = None  # the node lives on, its own metrics unread
        bd_seq = next((int(m.long_value) for m in p.metrics if m.name == "bdSeq"), None)
        self._nodes[key] = _Node(seq=p.seq, bd_seq=bd_seq, own=own)
        self._learned += 1
        self._event("birth")
        return [] if own is None else self._values(t, own, p, now)

    def _device_birth(self, t: Topic, node: _Node, p: Payload, now: float) -> list[Reading]:
        old = node.devices.pop(t.device, None)
        if old is not None:
            self._forget(old)
        asset = self._settings.asset.format(group=t.group, node=t.node, device=t.device)
        device = self._learn(asset, p)
        if device is None:
            return []
        node.devices[t.device] = device  # refused, it stays as a placeholder: no rebirth loop
        if device.refused:
            return []
        if old is not None:
            device.last_ts = old.last_ts
        self._event("birth")
        return self._values(t, device, p, now)

    def _node_death(self, t: Topic, node: _Node, p: Payload) -> list[Reading]:
        bd_seq = next((int(m.long_value) for m in p.metrics if m.name == "bdSeq"), None)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            self._event("stale_death")  # the Will of an earlier session, delivered late
            return []
        del self._nodes[t.group, t.node]
        self._forget_node(node)
        self._event("death")
        return _stale([*node.devices.values(), *([node.own] if node.own else [])])

    def _learn(self, asset: str, p: Payload) -> _Device | None:
        by_alias: dict[int, _Metric] = {}
        by_name: dict[str, _Metric] = {}
        signals, ignore = self._signals, self._ignore
        for m in p.metrics:
            name = m.name
            if not name:
                continue
            numeric = _NUMERIC.get(m.datatype)
            wanted = numeric is not None and not (name.startswith(ignore) or name in ignore)
            signal = (signals.get(name) if signals else name) if wanted else None
            entry = _Metric(signal, *(numeric or ("", 0)))
            by_name[name] = entry
            if m.HasField("alias"):
                by_alias[m.alias] = entry
        device = _Device(asset, by_alias, by_name)
        limit = self._settings.max_metrics
        if self._learned + device.size > limit:
            self._event("birth_refused")
            device = _Device(asset, {}, {}, refused=True)  # costs 1, as a name would
            if self._learned + device.size > limit:
                return None
        self._learned += device.size
        return device

    def _forget(self, device: _Device) -> None:
        self._learned -= device.size

    def _forget_node(self, node: _Node) -> None:
        self._learned -= 1
        for device in node.devices.values():
            self._forget(device)
        if node.own is not None:
            self._forget(node.own)

    # -- data -----------------------------------------------------------------------------
    def _check_seq(self, t: Topic, node: _Node, p: Payload) -> None:
        if not p.HasField("seq"):
            return
        seq = p.seq
        if seq != (node.seq + 1) % 256:
            self._event("seq_gap")
            self._want_rebirth(t.group, t.node)
        node.seq = seq

    def _values(self, t: Topic, device: _Device, p: Payload, now: float) -> list[Reading]:
        """Each known numeric metric's value; an unknown alias or name asks for a rebirth."""
        default_ts = p.timestamp / 1000.0 if p.timestamp else now
        by_alias, by_name, asset = device.by_alias, device.by_name, device.asset
        out: list[Reading] = []
        unknown = 0
        last = device.last_ts
        for m in p.metrics:
            name = m.name
            entry = by_name.get(name) if name else by_alias.get(m.alias)
            if entry is None:
                unknown += 1
                continue
            signal = entry.signal
            if signal is None:
                continue
            ms = m.timestamp
            ts = ms / 1000.0 if ms else default_ts
            field = entry.field
            value = getattr(m, field)
            # A zero may be a value, a null or nothing: only then is presence asked (cheaper).
            if not value and not m.HasField(field):
                if not m.is_null:
                    continue  # no value in the field its birth named: not a reading
                out.append(_new_reading((asset, signal, ts, _NAN, _BAD)))
            else:
                if entry.bits:
                    value = _signed(value, entry.bits)
                quality = _quality(m) if m.HasField("properties") else _GOOD
                out.append(_new_reading((asset, signal, ts, float(value), quality)))
            last = max(last, ts)
        device.last_ts = last
        if unknown:
            self._event("unknown_alias", unknown)
            self._want_rebirth(t.group, t.node)
        return out

    def _event(self, kind: str, n: int = 1) -> None:
        self.events[kind] = self.events.get(kind, 0) + n
        if self._on_event is not None:
            self._on_event(kind, n)


def _stale(devices: list[_Device]) -> list[Reading]:
    """A BAD reading of every signal of `devices`, just after each one's last reading."""
    out: list[Reading] = []
    for device in devices:
        ts = device.last_ts + _DEATH_AFTER_S
        signals = {e.signal for e in device.by_name.values() if e.signal is not None}
        out += [_new_reading((device.asset, s, ts, _NAN, _BAD)) for s in sorted(signals)]
    return out


def _signed(value: int, bits: int) -> int:
    """Two's complement, whether the sender sign-extended to 32 or 64 bits or not."""
    if bits < 64 and value >= 1 << 31:
        return value - (1 << 32) if value < 1 << 32 else value - (1 << 64)
    if value >= 1 << (bits - 1):
        return value - (1 << bits)
    return value


def _quality(m: Payload.Metric) -> Quality:
    """The metric's `Quality` property (OPC DA codes: 192+ good, 64+ uncertain, else bad)."""
    props = m.properties
    for key, pv in zip(props.keys, props.values, strict=False):
        if key == "Quality":
            code = pv.int_value if pv.HasField("int_value") else pv.long_value
            if code >= 192:  # OPC DA: 0xC0 and up is good, 0x40 and up uncertain
                return _GOOD
            return _UNCERTAIN if code >= 64 else _BAD
    return _GOOD


def rebirth_payload(now_ms: int) -> bytes:
    """An NCMD asking a node to publish its births again (`Node Control/Rebirth` = true)."""
    p = Payload(timestamp=now_ms)
    p.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=True)
    return p.SerializeToString()
