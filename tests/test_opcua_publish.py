"""The publish loop's own decoding (against asyncua's) and its queued requests, on a real server."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from datetime import UTC
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary
from asyncua.ua.uaerrors import UaStatusCodeError

from edge_agent.connectors.opcua import PUBLISH_REQUESTS
from edge_agent.connectors.opcua_nodes import epoch
from edge_agent.connectors.opcua_publish import decode_publish
from edge_agent.core.readings import Quality, Reading
from edge_agent.simulator.opcua_server import PlantServer
from edge_agent.simulator.plant import SIGNALS
from tests.test_opcua import WAIT_S, dropped, opcua_settings, running

T0 = ua.DateTime(2027, 1, 15, 8, 30, 1, 123456, tzinfo=UTC)
T1 = ua.DateTime(2027, 1, 15, 8, 30, 2, 654321, tzinfo=UTC)
V = ua.VariantType


def code(value: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(value))


BAD = code(StatusCodes.BadSensorFailure)
UNCERTAIN = code(StatusCodes.UncertainLastUsableValue)

VALUES: list[ua.DataValue] = [
    ua.DataValue(ua.Variant(1.5, V.Double), SourceTimestamp=T0, ServerTimestamp=T1),
    ua.DataValue(ua.Variant(0.25, V.Float), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(-5, V.Int64), ServerTimestamp=T1),
    ua.DataValue(ua.Variant(7, V.UInt16)),
    ua.DataValue(ua.Variant(Value=True, VariantType=V.Boolean), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(-3, V.SByte), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(200, V.Byte), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(-300, V.Int16), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(4_000_000_000, V.UInt32), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(-70_000, V.Int32), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(2**63 + 1, V.UInt64), SourceTimestamp=T0),
    ua.DataValue(ua.Variant("on", V.String), SourceTimestamp=T0),  # asyncua decodes these
    ua.DataValue(ua.Variant([1.0, 2.0], V.Double), SourceTimestamp=T0),
    ua.DataValue(ua.Variant(9.5, V.Double), StatusCode=UNCERTAIN, SourceTimestamp=T0),
    ua.DataValue(ua.Variant(None), StatusCode=BAD, ServerTimestamp=T1),
    ua.DataValue(ua.Variant(2.5, V.Double), SourceTimestamp=T0),  # after the slow ones
]


def response_bytes(*notifications: Any, sequence: int = 42) -> bytes:
    response = ua.PublishResponse()
    response.Parameters.SubscriptionId = 7
    response.Parameters.AvailableSequenceNumbers = [40, 41, 42]
    message = response.Parameters.NotificationMessage
    message.SequenceNumber = sequence
    message.PublishTime = T1
    message.NotificationData = list(notifications)
    return struct_to_binary(response)  # the type id first, as on the wire


def data_change(values: list[ua.DataValue], first: int = 100) -> ua.DataChangeNotification:
    return ua.DataChangeNotification(
        MonitoredItems=[
            ua.MonitoredItemNotification(ClientHandle=first + i, Value=dv)
            for i, dv in enumerate(values)
        ]
    )


def test_decodes_what_asyncua_decodes() -> None:
    status = ua.StatusChangeNotification(Status=code(StatusCodes.BadShutdown))
    raw = response_bytes(data_change(VALUES), status, data_change(VALUES[:2], first=500))
    publish = decode_publish(Buffer(raw))

    reference = struct_from_binary(ua.PublishResponse, Buffer(raw)).Parameters
    expected = [
        (
            item.ClientHandle,
            item.Value.Value.Value if item.Value.Value is not None else None,
            item.Value.StatusCode.value,
            epoch(item.Value.SourceTimestamp),
            epoch(item.Value.ServerTimestamp),
        )
        for notification in reference.NotificationMessage.NotificationData
        if isinstance(notification, ua.DataChangeNotification)
        for item in notification.MonitoredItems
    ]
    assert len(expected) == len(VALUES) + 2
    assert publish.changes == expected
    written = [dv.Value.Value if dv.Value is not None else None for dv in VALUES]
    # bool stays bool, int stays int
    assert [type(c[1]) for c in publish.changes[: len(VALUES)]] == [type(v) for v in written]
    assert (publish.subscription_id, publish.sequence, publish.notifications) == (7, 42, True)
    assert [type(n) for n in publish.other] == [ua.StatusChangeNotification]
    assert publish.other[0].Status.value == StatusCodes.BadShutdown
    assert publish.changes[0][3] == T0.timestamp()


def test_a_keep_alive_has_nothing_to_acknowledge() -> None:
    publish = decode_publish(Buffer(response_bytes()))
    assert (publish.changes, publish.other, publish.notifications) == ([], [], False)


def test_picoseconds_are_read_in_the_order_of_the_specification() -> None:
    # Part 6, 5.2.2.17: SourceTimestamp, SourcePicoseconds, ServerTimestamp, ServerPicoseconds
    ticks = [ua.datetime_to_win_epoch(t) for t in (T0, T1)]
    value = struct.pack(
        "<BBdqHqH", 0x01 | 0x04 | 0x10 | 0x08 | 0x20, 11, 3.5, ticks[0], 999, ticks[1], 1
    )
    body = struct.pack("<iI", 1, 5) + value + struct.pack("<i", 0)
    raw = bytearray(response_bytes(data_change([VALUES[3]])))
    old = struct_to_binary(data_change([VALUES[3]]))
    at = raw.index(old)
    raw[at - 4 : at + len(old)] = struct.pack("<i", len(body)) + body
    publish = decode_publish(Buffer(bytes(raw)))
    assert publish.changes == [(5, 3.5, 0, T0.timestamp(), T1.timestamp())]


def test_a_service_fault_raises_its_status() -> None:
    fault = ua.ServiceFault()
    fault.ResponseHeader.ServiceResult = code(StatusCodes.BadNoSubscription)
    with pytest.raises(UaStatusCodeError) as caught:
        decode_publish(Buffer(struct_to_binary(fault)))
    assert caught.value.code == StatusCodes.BadNoSubscription


@pytest.fixture
async def plant() -> AsyncIterator[PlantServer]:
    async with PlantServer(0, ["pump-1"], speed=0, start_ts=1.8e9) as server:
        yield server


def queued(plant: PlantServer) -> int:
    """PublishRequests the server holds for its (only) client."""
    assert plant._server is not None
    assert plant._server.bserver is not None
    clients = plant._server.bserver.clients
    processor = clients[0].processor if clients else None
    return len(processor._publish_requests) if processor is not None else 0


async def test_keeps_several_publish_requests_queued_at_the_server(plant: PlantServer) -> None:
    async with running(opcua_settings(plant, plant.node_map())) as (source, _):
        await source.wait_ready()
        async with asyncio.timeout(WAIT_S):
            while queued(plant) < PUBLISH_REQUESTS:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # answers are acknowledged and asked for again, no more
        assert queued(plant) == PUBLISH_REQUESTS


async def test_values_of_every_kind_reach_the_pipeline_or_are_counted(plant: PlantServer) -> None:
    server = plant._server
    assert server is not None
    kinds = {
        "count": ua.Variant(41, V.Int32),
        "running": ua.Variant(Value=False, VariantType=V.Boolean),
        "level": ua.Variant(0.5, V.Float),
        "mode": ua.Variant("auto", V.String),
        "profile": ua.Variant([1.0, 2.0], V.Double),
    }
    nodes: dict[str, ua.NodeId] = {}
    for name, variant in kinds.items():
        var = await server.nodes.objects.add_variable(
            plant.ns, name, variant.Value, variant.VariantType
        )
        nodes[name] = var.nodeid
    node_map = [{"node_id": n.to_string(), "asset": "m", "signal": k} for k, n in nodes.items()]
    before = dropped("opcua_not_numeric")
    async with running(opcua_settings(plant, node_map)) as (source, got):
        await source.wait_ready()
        await got.until(lambda rs: {r.signal for r in rs} >= {"count", "running", "level"})
        written = {"count": 42, "running": True, "level": 0.75}
        ts = 1.9e9
        for name, value in written.items():
            variant = ua.Variant(value, kinds[name].VariantType)
            stamp = ua.DateTime.fromtimestamp(ts, UTC)
            await server.write_attribute_value(
                nodes[name], ua.DataValue(variant, SourceTimestamp=stamp)
            )
        bad = ua.DataValue(
            ua.Variant(None), StatusCode=BAD, SourceTimestamp=ua.DateTime.fromtimestamp(ts + 1, UTC)
        )
        await server.write_attribute_value(nodes["level"], bad)
        readings = await got.until(lambda rs: sum(r.ts >= ts for r in rs) == 4)
    fresh = {(r.signal, r.ts): r for r in readings if r.ts >= ts}
    assert {name: fresh[name, ts].value for name in written} == {
        "count": 42.0,
        "running": 1.0,
        "level": 0.75,
    }
    assert fresh["level", ts + 1].quality is Quality.BAD
    assert str(fresh["level", ts + 1].value) == "nan"
    assert dropped("opcua_not_numeric") >= before + 2  # the string and the array, at least once
    assert not any(r.signal in {"mode", "profile"} for r in readings)


def every_signal_at(ts: float) -> Callable[[list[Reading]], bool]:
    return lambda rs: sum(r.ts == ts for r in rs) == len(SIGNALS)


async def test_a_server_that_takes_fewer_requests_gets_fewer(
    plant: PlantServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server keeps one request per subscription; each further one evicts the oldest
    # with BadTooManyPublishRequests. The session carries on with one request queued.
    monkeypatch.setattr(UaProcessor, "publish_request_limit", lambda _self, _subs: 1)
    async with running(opcua_settings(plant, plant.node_map())) as (source, got):
        await source.wait_ready()
        await asyncio.sleep(0.5)  # the evictions come as the requests arrive
        for _ in range(3):
            ts = (await plant.step())["pump-1"][0]
            await got.until(every_signal_at(ts))
        assert queued(plant) == 1
        assert source.connected.is_set()
        assert source._sessions == 1
        assert source.last_error is None
