"""The plant served over OPC UA by an in-process asyncua server.

One folder per asset under Objects, one Double variable per signal, node ids
`ns=<plant namespace>;s=<asset>.<signal>`. Values come from `PumpStream` (1 Hz simulated
time); `speed` simulated seconds pass per wall second. Stopping and starting again builds a
fresh asyncua server on the same port (new session ids) while the plant keeps its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Literal, Self

import structlog
from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

from edge_agent.simulator.plant import SIGNALS, FaultSpec, PumpStream

NAMESPACE_URI = "urn:edge-agent:plant"
UNITS: Mapping[str, str] = {
    "temperature": "degC",
    "vibration": "mm/s",
    "current": "A",
    "pressure": "bar",
    "flow": "m3/h",
}
Endpoint = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]
_POLICIES: Mapping[Endpoint, ua.SecurityPolicyType] = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
_SERVER_URI = "urn:edge-agent:plant-server"

log = structlog.get_logger(__name__)


class _Users(UserManager):
    """asyncua user manager: a fixed name -> password table, nobody else."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> User | None:
        del iserver, certificate
        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User)


class PlantServer:
    """A simulated plant on an OPC UA endpoint; an async context manager (start/stop).

    `speed=0` stops the clock: values change only through `step()` and `write()`, which is
    what tests use to check exact values. `source_time="wall"` stamps values with the wall
    clock at write instead of simulated time (the benchmark measures lag with it).
    """

    def __init__(  # noqa: PLR0913 - a simulator has many knobs; all but two have defaults
        self,
        port: int,
        assets: Sequence[str] = ("pump-1",),
        *,
        host: str = "127.0.0.1",
        seed: int = 0,
        speed: float = 1.0,
        start_ts: float | None = None,
        faults: Mapping[str, FaultSpec] | None = None,
        source_time: Literal["simulated", "wall"] = "simulated",
        endpoints: Sequence[Endpoint] = ("None",),
        certificate: Path | None = None,
        private_key: Path | None = None,
        trusted: Sequence[Path] = (),
        users: Mapping[str, str] | None = None,
        max_nodes_per_read: int = 0,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0, got {speed}")
        if any(e != "None" for e in endpoints) and (certificate is None or private_key is None):
            raise ValueError("secure endpoints need a server certificate and private key")
        self.port = port
        self.host = host
        self.assets = tuple(assets)
        self.speed = speed
        self._source_time = source_time
        self._endpoints = tuple(endpoints)
        self._certificate = certificate
        self._private_key = private_key
        self._trusted = tuple(trusted)
        self._users = dict(users) if users else None
        self._max_nodes_per_read = max_nodes_per_read
        start = time.time() if start_ts is None else start_ts
        faults = faults or {}
        self._streams = {a: PumpStream(a, seed, start, faults.get(a)) for a in self.assets}
        # (asset, signal) -> value, source and server timestamp of the newest write
        self._last: dict[tuple[str, str], tuple[float, float | None, float | None]] = {}
        self._status: dict[tuple[str, str], ua.StatusCode] = {}
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.ns = 0
        self.read_sizes: list[int] = []  # NodesToRead of every client Read, for tests
        self.steps = 0  # plant steps written (the ticker skips steps when it falls behind)

    @property
    def endpoint(self) -> str:
        """The URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}"

    def node_id(self, asset: str, signal: str) -> str:
        """The node id string of one signal, as a node map names it."""
        return f"ns={self.ns};s={asset}.{signal}"

    def node_map(self) -> list[dict[str, str]]:
        """A node map for every asset and signal, ready for EDGE_OPCUA__NODES (JSON)."""
        return [
            {
                "node_id": self.node_id(asset, signal),
                "asset": asset,
                "signal": signal,
                "unit": UNITS[signal],
            }
            for asset in self.assets
            for signal in SIGNALS
        ]

    def subscription_count(self) -> int:
        """Subscriptions the running server holds (all sessions)."""
        if self._server is None:
            return 0
        return len(self._server.iserver.subscription_service.subscriptions)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space and listen; after a stop, on the same port again."""
        if self._server is not None:
            return
        server = Server(user_manager=_Users(self._users) if self._users else None)
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}")
        server.set_server_name("edge-agent plant simulator")
        await server.set_application_uri(_SERVER_URI)
        server.set_security_policy([_POLICIES[e] for e in self._endpoints])
        if self._users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if self._certificate is not None and self._private_key is not None:
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
        if self._trusted:
            store = TrustStore(list(self._trusted), [])
            await store.load()
            options = (
                CertificateValidatorOptions.TIME_RANGE
                | CertificateValidatorOptions.URI
                | CertificateValidatorOptions.TRUSTED
                | CertificateValidatorOptions.PEER_CLIENT
            )
            server.set_certificate_validator(CertificateValidator(options, store))
        self.ns = await server.register_namespace(NAMESPACE_URI)
        await self._build(server)
        server.subscribe_server_callback(CallbackType.PreRead, self._on_read)
        await server.start()
        if server.bserver is not None:  # port 0: keep the port the OS chose for restarts
            self.port = server.bserver.port or self.port
        self._server = server
        if self.speed > 0:
            self._ticker = asyncio.create_task(self._tick(), name="plant-opcua-ticker")
        log.info("plant OPC UA server up", endpoint=self.endpoint, assets=len(self.assets))

    async def stop(self) -> None:
        """Stop serving: clients lose their connection; the plant keeps its state."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            server, self._server = self._server, None
            # asyncua's stop waits out the clock task's 1 s sleep; cancelling it first
            # makes a stop immediate (tests stop servers often).
            clock = server.iserver.time_task
            if clock is not None:
                clock.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await clock
                server.iserver.time_task = None
            await server.stop()
            log.info("plant OPC UA server down", endpoint=self.endpoint)

    async def _build(self, server: Server) -> None:
        if self._max_nodes_per_read > 0:
            limit = ua.NodeId(
                ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead)
            )
            value = ua.Variant(self._max_nodes_per_read, ua.VariantType.UInt32)
            await server.write_attribute_value(limit, ua.DataValue(value))
        objects = server.nodes.objects
        for asset in self.assets:
            folder = await objects.add_folder(
                ua.NodeId(ua.String(asset), ua.Int16(self.ns)), ua.QualifiedName(asset, self.ns)
            )
            for signal in SIGNALS:
                node = await folder.add_variable(
                    ua.NodeId(ua.String(f"{asset}.{signal}"), ua.Int16(self.ns)),
                    ua.QualifiedName(signal, self.ns),
                    ua.Variant(0.0, ua.VariantType.Double),
                )
                self._nodes[asset, signal] = node.nodeid
                # After a restart the last value comes back with its own timestamps, as a
                # real server's would: a client must not take it for a new sample.
                if (asset, signal) in self._last:
                    await server.write_attribute_value(node.nodeid, self._data(asset, signal))

    async def _on_read(self, event: ServerItemCallback, _dispatcher: Any) -> None:
        if event.is_external:
            self.read_sizes.append(len(event.request_params.NodesToRead))

    async def _tick(self) -> None:
        interval = 1.0 / self.speed
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await self.step()
            due += interval
            lag = loop.time() - due
            if lag > 1.0:  # fell far behind (a busy machine): skip ahead, never burst
                due = loop.time()
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def step(self) -> dict[str, tuple[float, dict[str, float]]]:
        """Advance every asset one simulated second and publish it; returns what was written."""
        self.steps += 1
        written: dict[str, tuple[float, dict[str, float]]] = {}
        for asset, stream in self._streams.items():
            ts, values = stream.step()
            if self._source_time == "wall":
                ts = time.time()
            clean = {s: float(v) for s, v in values.items()}
            for signal, value in clean.items():
                await self.write(asset, signal, value, source_ts=ts, server_ts=ts)
            written[asset] = (ts, clean)
        return written

    async def write(
        self,
        asset: str,
        signal: str,
        value: float,
        *,
        source_ts: float | None,
        server_ts: float | None,
        status: str | None = None,
    ) -> None:
        """Write one value; None timestamps are left out (clients then fall back)."""
        self._last[asset, signal] = (value, source_ts, server_ts)
        if status is not None:
            self._status[asset, signal] = _status_code(status)
        if self._server is not None:
            data = self._data(asset, signal)
            await self._server.write_attribute_value(self._nodes[asset, signal], data)
        if status is not None:  # a one-off status: later values are Good again
            self._status.pop((asset, signal), None)

    def _data(self, asset: str, signal: str) -> ua.DataValue:
        value, source_ts, server_ts = self._last[asset, signal]
        return ua.DataValue(
            ua.Variant(value, ua.VariantType.Double),
            StatusCode=self._status.get((asset, signal), _GOOD),
            SourceTimestamp=_utc(source_ts),
            ServerTimestamp=_utc(server_ts),
        )

    async def set_status(self, asset: str, signal: str, status: str | None) -> None:
        """Mark a signal with an OPC UA status name (e.g. BadSensorFailure); None: Good again.

        The status sticks to later values until cleared, and the current value is re-sent
        with it at once.
        """
        key = (asset, signal)
        if status is None:
            self._status.pop(key, None)
        else:
            self._status[key] = _status_code(status)
        now = time.time()
        value = self._last.get(key, (0.0, None, None))[0]
        await self.write(asset, signal, value, source_ts=now, server_ts=now)


def _utc(ts: float | None) -> ua.DateTime | None:
    return None if ts is None else ua.DateTime.fromtimestamp(ts, UTC)


def _status_code(name: str) -> ua.StatusCode:
    code = getattr(StatusCodes, name, None)
    if code is None:
        raise ValueError(f"{name!r} is not an OPC UA status code name")
    return ua.StatusCode(ua.UInt32(code))


_GOOD = _status_code("Good")
