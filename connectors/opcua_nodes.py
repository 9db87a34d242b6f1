"""The OPC UA node map: parse it, resolve it on a server, and turn DataValues into readings."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from edge_agent.connectors.settings import OpcUaNode, OpcUaSettings
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Quality, Reading

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
_new = tuple.__new__  # Reading(...) without NamedTuple's keyword handling
# One data change as a publish carries it: client handle, value (None: null), status code,
# source and server timestamp in seconds since the epoch (None: absent or null).
Change = tuple[int, Any, int, float | None, float | None]

# Timestamps before this are the encoding's "null" (1601) or a clock that was never set.
_OLDEST_TS = 1e8
_DEADBAND = {"absolute": 1, "percent": 2}  # DeadbandType
_OBJECTS = ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
_LIMITS = {
    "read": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "monitor": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    "translate": (
        ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds
    ),
}


@dataclass(frozen=True, slots=True)
class MappedNode:
    """A node map entry as the connector uses it: where it is and what it becomes."""

    name: str  # the node id or browse path as configured, for messages
    asset: str
    signal: str
    scale: float
    offset: float
    node_id: ua.NodeId | None  # None until a browse path is resolved
    path: ua.RelativePath | None


def parse_node_map(entries: Sequence[OpcUaNode]) -> list[MappedNode]:
    """Parse node ids and browse paths; a malformed one is a ConfigError naming the entry."""
    nodes: list[MappedNode] = []
    for i, entry in enumerate(entries):
        where = f"EDGE_OPCUA__NODES[{i}] ({entry.asset}/{entry.signal})"
        node_id: ua.NodeId | None = None
        path: ua.RelativePath | None = None
        try:
            if entry.node_id:
                node_id = ua.NodeId.from_string(entry.node_id)
            else:
                text = entry.browse_path
                path = ua.RelativePath.from_string(text if text.startswith("/") else f"/{text}")
        except (ValueError, UaError) as exc:
            raise ConfigError(f"{where}: cannot parse {entry.name!r}: {exc}") from exc
        nodes.append(
            MappedNode(
                entry.name, entry.asset, entry.signal, entry.scale, entry.offset, node_id, path
            )
        )
    return nodes


async def operation_limits(client: Client) -> dict[str, int]:
    """The server's OperationLimits (0: the server states none)."""
    ids = [ua.NodeId(ua.Int32(i)) for i in _LIMITS.values()]
    params = ua.ReadParameters(
        NodesToRead=[ua.ReadValueId(NodeId=n, AttributeId=AttributeIds.Value) for n in ids]
    )
    values = await client.uaclient.read(params)
    limits: dict[str, int] = {}
    for key, dv in zip(_LIMITS, values, strict=True):
        good = dv.StatusCode is not None and dv.StatusCode.is_good()
        raw = dv.Value.Value if good and dv.Value is not None else None
        limits[key] = int(raw) if isinstance(raw, int) and raw > 0 else 0
    return limits


def chunks(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    """Split `items` into runs of at most `size` (size 0: one run)."""
    size = size or len(items) or 1
    return [items[i : i + size] for i in range(0, len(items), size)]


async def resolve(
    client: Client, nodes: Sequence[MappedNode], limits: dict[str, int]
) -> tuple[list[MappedNode], list[tuple[MappedNode, str]]]:
    """Resolve browse paths and check that every node exists.

    Returns the usable nodes (node ids filled in) and the missing ones with the reason.
    """
    found: list[MappedNode] = []
    missing: list[tuple[MappedNode, str]] = []
    by_id: list[MappedNode] = []
    paths = [n for n in nodes if n.path is not None]
    for part in chunks(paths, limits["translate"]):
        browse = [ua.BrowsePath(StartingNode=_OBJECTS, RelativePath=n.path) for n in part]
        results = await client.uaclient.translate_browsepaths_to_nodeids(browse)
        for node, result in zip(part, results, strict=True):
            if result.StatusCode.is_good() and result.Targets:
                target = result.Targets[0].TargetId
                by_id.append(
                    MappedNode(
                        node.name, node.asset, node.signal, node.scale, node.offset, target, None
                    )
                )
            else:
                missing.append((node, f"browse path does not resolve ({result.StatusCode.name})"))
    by_id += [n for n in nodes if n.path is None]
    for part in chunks(by_id, limits["read"]):
        params = ua.ReadParameters(
            NodesToRead=[
                ua.ReadValueId(NodeId=n.node_id, AttributeId=AttributeIds.NodeClass) for n in part
            ]
        )
        for node, dv in zip(part, await client.uaclient.read(params), strict=True):
            status = dv.StatusCode or ua.StatusCode()
            if not status.is_good():
                missing.append((node, f"node does not exist ({status.name})"))
            elif dv.Value is None or dv.Value.Value != ua.NodeClass.Variable:
                missing.append((node, "node is not a variable"))
            else:
                found.append(node)
    return found, missing


def subscription_parameters(s: OpcUaSettings) -> ua.CreateSubscriptionParameters:
    """Subscription parameters: keep-alive about every 10 s, lifetime three keep-alives."""
    keepalive = max(1, math.ceil(10_000 / s.publishing_interval_ms))
    return ua.CreateSubscriptionParameters(
        RequestedPublishingInterval=s.publishing_interval_ms,
        RequestedLifetimeCount=keepalive * 3,
        RequestedMaxKeepAliveCount=keepalive,
        MaxNotificationsPerPublish=0,
        PublishingEnabled=True,
    )


def monitor_requests(
    handles: Mapping[int, MappedNode], s: OpcUaSettings
) -> list[ua.MonitoredItemCreateRequest]:
    """One monitored item per node, its client handle the key in `handles`."""
    mfilter = None
    if s.deadband != "none":
        mfilter = ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue,
            DeadbandType=_DEADBAND[s.deadband],
            DeadbandValue=s.deadband_value,
        )
    return [
        ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=node.node_id, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=ua.MonitoringParameters(
                ClientHandle=handle,
                SamplingInterval=s.sampling_interval_ms,
                QueueSize=s.queue_size,
                DiscardOldest=True,
                Filter=mfilter,
            ),
        )
        for handle, node in handles.items()
    ]


def read_requests(
    nodes: Sequence[MappedNode], size: int
) -> list[tuple[Sequence[MappedNode], ua.ReadParameters]]:
    """Read calls of at most `size` nodes each, asking for both timestamps."""
    return [
        (
            part,
            ua.ReadParameters(
                MaxAge=0,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[
                    ua.ReadValueId(NodeId=n.node_id, AttributeId=AttributeIds.Value) for n in part
                ],
            ),
        )
        for part in chunks(nodes, size)
    ]


def epoch(stamp: datetime | None) -> float | None:
    """Seconds since the epoch, or None for a missing or null OPC UA timestamp."""
    if stamp is None:
        return None
    if stamp.tzinfo is None:  # the binary decoder gives UTC; be safe with naive values
        stamp = stamp.replace(tzinfo=UTC)
    ts = stamp.timestamp()
    return ts if ts > _OLDEST_TS else None


def quality_of(status: int) -> Quality:
    """OPC UA status severity (the top two bits) to reading quality: Good, Uncertain, Bad."""
    severity = status >> 30
    if severity == 0:
        return Quality.GOOD
    return Quality.UNCERTAIN if severity == 1 else Quality.BAD


def reading_of(
    node: MappedNode,
    raw: object,
    status: int,
    source_ts: float | None,
    server_ts: float | None,
    received: float,
) -> Reading | None:
    """A Reading from a value's parts: source timestamp, else server, else arrival time.

    A value that is not a number gives None (the caller counts it); a Bad value without a
    number becomes NaN marked BAD, so the frames see the outage and not a fake value.
    """
    quality = quality_of(status)
    if isinstance(raw, bool | int | float):
        value = float(raw) * node.scale + node.offset
    elif raw is None and quality is not Quality.GOOD:
        value = math.nan
    else:
        return None
    return _new(
        Reading, (node.asset, node.signal, source_ts or server_ts or received, value, quality)
    )


def readings_of(
    changes: Iterable[Change], handles: Mapping[int, MappedNode], received: float
) -> Iterator[tuple[MappedNode, Reading | None]]:
    """The readings of a publish's data changes, by client handle (unknown handles skipped).

    A Good float with a source timestamp, nearly every value, is built here directly;
    the rest goes through `reading_of`.
    """
    get, good = handles.get, Quality.GOOD
    for handle, raw, status, source_ts, server_ts in changes:
        node = get(handle)
        if node is None:
            continue
        if status == 0 and source_ts is not None and raw.__class__ is float:
            value = raw * node.scale + node.offset
            yield node, _new(Reading, (node.asset, node.signal, source_ts, value, good))
        else:
            yield node, reading_of(node, raw, status, source_ts, server_ts, received)


def to_reading(node: MappedNode, dv: ua.DataValue, received: float) -> Reading | None:
    """Map one DataValue to a Reading (see `reading_of`)."""
    return reading_of(
        node,
        dv.Value.Value if dv.Value is not None else None,
        dv.StatusCode.value if dv.StatusCode is not None else 0,
        epoch(dv.SourceTimestamp),
        epoch(dv.ServerTimestamp),
        received,
    )
