"""An independent Sparkplug B edge node for the tests: its own schema, the protobuf library, paho.

The payload schema is built here from the Sparkplug B specification's field numbers with
protobuf's descriptor API, in a pool of its own: nothing of the agent's `.proto`, generated
module or decoder is used, so a mistake there cannot hide behind the same mistake here.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.simulator.broker import Broker

# Sparkplug B datatypes (specification, section 6.4.16).
INT32, INT64, UINT32, FLOAT, DOUBLE, BOOLEAN, STRING = 3, 4, 7, 9, 10, 11, 12
_F = descriptor_pb2.FieldDescriptorProto


def _build_payload_class() -> Any:
    """Payload { timestamp=1, repeated Metric metrics=2, seq=3 } and its Metric, proto2."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tests_sparkplug_b.proto", package="tests.spb", syntax="proto2"
    )
    payload = fdp.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    plain = [
        ("name", 1, _F.TYPE_STRING),
        ("alias", 2, _F.TYPE_UINT64),
        ("timestamp", 3, _F.TYPE_UINT64),
        ("datatype", 4, _F.TYPE_UINT32),
        ("is_null", 7, _F.TYPE_BOOL),
    ]
    for name, number, kind in plain:
        metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    values = [
        ("int_value", 10, _F.TYPE_UINT32),
        ("long_value", 11, _F.TYPE_UINT64),
        ("float_value", 12, _F.TYPE_FLOAT),
        ("double_value", 13, _F.TYPE_DOUBLE),
        ("boolean_value", 14, _F.TYPE_BOOL),
        ("string_value", 15, _F.TYPE_STRING),
    ]
    for name, number, kind in values:
        metric.field.add(
            name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL, oneof_index=0
        )
    payload.field.add(name="timestamp", number=1, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        type_name=".tests.spb.Payload.Metric",
        label=_F.LABEL_REPEATED,
    )
    payload.field.add(name="seq", number=3, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tests.spb.Payload"))


Payload = _build_payload_class()


def set_value(metric: Any, datatype: int, value: float | bool | str | None) -> None:
    """Put `value` in the field the datatype travels in (signed ints as two's complement)."""
    metric.datatype = datatype
    if value is None:
        metric.is_null = True
    elif datatype == INT32:
        metric.int_value = int(value) & 0xFFFFFFFF
    elif datatype == INT64:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif datatype == UINT32:
        metric.int_value = int(value)
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    else:
        metric.string_value = str(value)


def decode(payload: bytes) -> Any:
    """A payload the agent sent (an NCMD), read with the test's own schema."""
    return Payload.FromString(payload)


class EdgeNode:
    """A Sparkplug B edge node: NBIRTH/DBIRTH, DDATA by alias, DDEATH, NDEATH as its Will.

    `metrics[device]` is that device's birth: a list of (name, alias, datatype). Commands
    the agent sends to this node (NCMD) are kept in `commands`.
    """

    def __init__(self, broker: Broker, group: str, node: str, qos: int = 1) -> None:
        self.group, self.node, self.qos = group, node, qos
        self.seq = 0
        self.bd_seq = 0
        self.metrics: dict[str, list[tuple[str, int, int]]] = {}
        self.commands: queue.Queue[Any] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{group}-{node}")
        death = Payload(timestamp=int(time.time() * 1000))
        bd = death.metrics.add(name="bdSeq")
        set_value(bd, INT64, self.bd_seq)
        self.client.will_set(self.topic("NDEATH"), death.SerializeToString(), qos=1)
        ready = threading.Event()

        def on_connect(client: paho.Client, *_: object) -> None:
            client.subscribe(self.topic("NCMD"), qos=1)
            ready.set()

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            self.commands.put(decode(bytes(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10), "edge node could not connect"
        time.sleep(0.2)  # the SUBACK

    def topic(self, kind: str, device: str = "") -> str:
        """spBv1.0/<group>/<kind>/<node>[/<device>]."""
        base = f"spBv1.0/{self.group}/{kind}/{self.node}"
        return f"{base}/{device}" if device else base

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def send(self, topic: str, payload: Any) -> None:
        """Publish and wait until the broker has it."""
        body = payload if isinstance(payload, bytes) else payload.SerializeToString()
        self.client.publish(topic, body, qos=self.qos).wait_for_publish(10)

    def nbirth(self, ts_ms: int) -> None:
        """The node's birth: seq 0, its bdSeq, no node metrics of its own."""
        self.seq = 0
        p = Payload(timestamp=ts_ms, seq=self._next_seq())
        set_value(p.metrics.add(name="bdSeq"), INT64, self.bd_seq)
        set_value(p.metrics.add(name="Node Control/Rebirth"), BOOLEAN, value=False)
        self.send(self.topic("NBIRTH"), p)

    def dbirth(
        self, device: str, metrics: list[tuple[str, int, int]], values: dict[str, Any], ts_ms: int
    ) -> None:
        """A device's birth: every metric with name, alias, datatype and current value."""
        self.metrics[device] = metrics
        p = Payload(timestamp=ts_ms, seq=self._next_seq())
        for name, alias, datatype in metrics:
            m = p.metrics.add(name=name, alias=alias, timestamp=ts_ms)
            set_value(m, datatype, values.get(name))
        self.send(self.topic("DBIRTH", device), p)

    def ddata(
        self, device: str, values: dict[str, Any], ts_ms: int, seq: int | None = None
    ) -> None:
        """Values by alias only, as a node that uses aliases sends them."""
        p = Payload(timestamp=ts_ms, seq=self._next_seq() if seq is None else seq)
        for name, alias, datatype in self.metrics[device]:
            if name in values:
                set_value(p.metrics.add(alias=alias, timestamp=ts_ms), datatype, values[name])
        self.send(self.topic("DDATA", device), p)

    def ddeath(self, device: str, ts_ms: int) -> None:
        """The device is gone."""
        self.send(self.topic("DDEATH", device), Payload(timestamp=ts_ms, seq=self._next_seq()))

    def rebirths(self, wait_s: float = 0.0) -> list[Any]:
        """The Node Control/Rebirth commands received so far (waiting up to `wait_s` for one)."""
        out = []
        deadline = time.monotonic() + wait_s
        while True:
            try:
                out.append(self.commands.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return [
            c
            for c in out
            if any(m.name == "Node Control/Rebirth" and m.boolean_value for m in c.metrics)
        ]

    def close(self) -> None:
        """Disconnect cleanly (no Will)."""
        self.client.disconnect()
        self.client.loop_stop()
