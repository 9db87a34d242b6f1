"""The subscription's publish loop, with PublishResponses read straight from their bytes.

asyncua's generic decoder builds a dataclass per field: about 15 us per data change, most of
the client's CPU at 10,000 values/s. `decode_publish` reads the common case (a scalar
number, status, timestamps) with struct from the message and hands anything else (strings,
arrays, structures, event and status notifications) to asyncua's decoders, so every type
still arrives, only the common one cheaper.

asyncua's own loop keeps one PublishRequest at the server: the server cannot answer the
next publishing interval until the client has decoded the last answer and asked again, so
a slow moment on the client delays every later value. `PublishLoop` keeps several
requests queued there, as OPC UA expects of a client (Part 4, 5.13.5), and acknowledges
each answer in a later request.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import (
    extensionobject_from_binary,
    nodeid_from_binary,
    struct_from_binary,
)
from asyncua.ua.uaerrors import BadUnknownResponse, UaStatusCodeError

from edge_agent.connectors.opcua_nodes import Change, epoch

_EPOCH_TICKS = 116_444_736_000_000_000  # 100 ns ticks from 1601-01-01 to 1970-01-01
# Timestamps up to 1e8 s after 1970 are the encoding's null or a clock never set (as in
# opcua_nodes.epoch); as ticks, the first one after.
_OLDEST_TICKS = _EPOCH_TICKS + 10 * (10**14 + 1)
_DATA_CHANGE = ObjectIds.DataChangeNotification_Encoding_DefaultBinary
_PUBLISH_RESPONSE = ObjectIds.PublishResponse_Encoding_DefaultBinary
_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
# Variant type ids of the scalar numbers (Part 6, 5.1.2): Boolean .. Double.
_SCALARS: dict[int, struct.Struct] = {
    1: struct.Struct("<?"),
    2: struct.Struct("<b"),
    3: struct.Struct("<B"),
    4: struct.Struct("<h"),
    5: struct.Struct("<H"),
    6: struct.Struct("<i"),
    7: struct.Struct("<I"),
    8: struct.Struct("<q"),
    9: struct.Struct("<Q"),
    10: struct.Struct("<f"),
    11: struct.Struct("<d"),
}


@dataclass(slots=True)
class Publish:
    """What one PublishResponse carried."""

    subscription_id: int
    sequence: int
    changes: list[Change] = field(default_factory=list)
    other: list[Any] = field(default_factory=list)  # status changes, events (asyncua objects)
    notifications: bool = False  # NotificationData was not empty: acknowledge it


@functools.cache
def _layout(mask: int, vtype: int) -> tuple[struct.Struct, int, int, int, int]:
    """How a MonitoredItemNotification with a scalar number is laid out, read in one go.

    Returns the struct (client handle to the end of the DataValue) and the positions in it
    of the value, status, source and server timestamp (-1: absent). Part 6, 5.2.2.17.
    """
    fields = ["I", "B"]  # ClientHandle, the DataValue's encoding mask
    value_at = status_at = source_at = server_at = -1
    if mask & 0x01:
        fields.append("B")  # the variant's type; none follows a null
        if vtype:
            value_at = len(fields)
            fields.append(_SCALARS[vtype].format[1:])
    if mask & 0x02:
        status_at = len(fields)
        fields.append("I")
    if mask & 0x04:
        source_at = len(fields)
        fields.append("q")
    if mask & 0x10:
        fields.append("H")  # source picoseconds
    if mask & 0x08:
        server_at = len(fields)
        fields.append("q")
    if mask & 0x20:
        fields.append("H")  # server picoseconds
    return struct.Struct("<" + "".join(fields)), value_at, status_at, source_at, server_at


def _slow_value(raw: bytes, pos: int, handle: int, out: list[Change]) -> int:
    """One DataValue the fast path does not read, through asyncua; returns the new offset."""
    buf = Buffer(raw, pos)
    dv = struct_from_binary(ua.DataValue, buf)
    value = dv.Value.Value if dv.Value is not None else None
    status = dv.StatusCode.value if dv.StatusCode is not None else 0
    out.append((handle, value, status, epoch(dv.SourceTimestamp), epoch(dv.ServerTimestamp)))
    return buf.cur_pos


def _data_changes(raw: bytes, pos: int, out: list[Change]) -> None:
    """The MonitoredItems of a DataChangeNotification body starting at `pos`."""
    (count,) = _I32.unpack_from(raw, pos)
    pos += 4
    scalars, layout, append = _SCALARS, _layout, out.append
    for _ in range(max(count, 0)):
        mask = raw[pos + 4]
        vtype = raw[pos + 5] if mask & 0x01 else 0
        if vtype and vtype not in scalars:  # arrays, strings, structures ...
            pos = _slow_value(raw, pos + 4, _U32.unpack_from(raw, pos)[0], out)
            continue
        shape, value_at, status_at, source_at, server_at = layout(mask & 0x3F, vtype)
        item = shape.unpack_from(raw, pos)
        pos += shape.size
        source = item[source_at] if source_at >= 0 else 0
        server = item[server_at] if server_at >= 0 else 0
        append(
            (
                item[0],
                item[value_at] if value_at >= 0 else None,
                item[status_at] if status_at >= 0 else 0,
                (source - _EPOCH_TICKS) // 10 / 1e6 if source >= _OLDEST_TICKS else None,
                (server - _EPOCH_TICKS) // 10 / 1e6 if server >= _OLDEST_TICKS else None,
            )
        )


def decode_publish(data: Buffer) -> Publish:
    """Decode a PublishResponse; raise UaStatusCodeError for a fault or a bad result."""
    raw = bytes(data)
    buf = Buffer(raw)
    type_id = nodeid_from_binary(buf)
    header = struct_from_binary(ua.ResponseHeader, buf)
    header.ServiceResult.check()
    if type_id.Identifier != _PUBLISH_RESPONSE:
        raise BadUnknownResponse
    pos = buf.cur_pos
    (subscription,) = _U32.unpack_from(raw, pos)
    (available,) = _I32.unpack_from(raw, pos + 4)
    pos += 8 + 4 * max(available, 0) + 1  # the sequence numbers, MoreNotifications
    (sequence,) = _U32.unpack_from(raw, pos)
    (count,) = _I32.unpack_from(raw, pos + 12)  # after the PublishTime
    pos += 16
    result = Publish(subscription, sequence, notifications=count > 0)
    for _ in range(max(count, 0)):
        buf = Buffer(raw, pos)
        start = pos
        type_id = nodeid_from_binary(buf)
        pos = buf.cur_pos
        if type_id.Identifier == _DATA_CHANGE and raw[pos] == 0x01:
            (length,) = _I32.unpack_from(raw, pos + 1)
            _data_changes(raw, pos + 5, result.changes)
            pos += 5 + length
        else:
            buf = Buffer(raw, start)
            result.other.append(extensionobject_from_binary(buf))
            pos = buf.cur_pos
    return result


class PublishLoop:
    """Keep `depth` PublishRequests at the server; hand each answer to `handle`.

    `send` is asyncua's `UASocketProtocol.send_request`. `run()` returns when the server
    refuses more requests than one (BadTooManyPublishRequests: one fewer is enough) and
    raises when the link fails or the server reports the subscription gone.
    """

    def __init__(self, send: Callable[..., Any], handle: Callable[[Publish], None]) -> None:
        self._send = send
        self._handle = handle
        self._acks: list[ua.SubscriptionAcknowledgement] = []
        self.active = 0

    async def run(self) -> None:
        """One of the queued requests: ask, wait, hand on, again."""
        self.active += 1
        try:
            while True:
                request = ua.PublishRequest()
                request.Parameters.SubscriptionAcknowledgements, self._acks = self._acks, []
                try:  # a ServiceFault comes as an exception from send, a bad result from decode
                    publish = decode_publish(await self._send(request, timeout=0))  # held there
                except UaStatusCodeError as exc:
                    if exc.code == StatusCodes.BadTimeout:
                        continue
                    if exc.code == StatusCodes.BadTooManyPublishRequests and self.active > 1:
                        return
                    raise
                if publish.notifications:
                    self._acks.append(
                        ua.SubscriptionAcknowledgement(
                            SubscriptionId=publish.subscription_id,
                            SequenceNumber=publish.sequence,
                        )
                    )
                self._handle(publish)
        finally:
            self.active -= 1
