"""OpcUaSource against a real asyncua server in process: both modes, quality, node map."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from edge_agent.connectors.opcua import OpcUaSource
from edge_agent.connectors.settings import OpcUaNode, OpcUaSettings
from edge_agent.core import metrics
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.flow.frames import FrameBuilder
from edge_agent.daemon.flow.settings import FrameSettings
from edge_agent.daemon.settings import load_settings
from edge_agent.simulator.opcua_server import PlantServer
from edge_agent.simulator.plant import SIGNALS

WAIT_S = 10.0  # a guard against hanging, never a speed requirement


def opcua_settings(
    server: PlantServer, nodes: Sequence[dict[str, Any]], **kw: Any
) -> OpcUaSettings:
    base: dict[str, Any] = {
        "endpoint": server.endpoint,
        "nodes": list(nodes),
        "security_policy": "None",
        "allow_insecure": True,
        "publishing_interval_ms": 50,
        "sampling_interval_ms": 0,
        "poll_interval_s": 0.1,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    return OpcUaSettings.model_validate(base | kw)


def error_of(source: OpcUaSource) -> str | None:
    return source.last_error  # a call, so that mypy does not narrow it across awaits


def dropped(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value("edge_readings_dropped_total", {"reason": reason}) or 0.0
    )


class Collector:
    """Drains a source's batches in the background so tests can wait for readings."""

    def __init__(self, source: OpcUaSource) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self._task = asyncio.create_task(self._drain(source))

    async def _drain(self, source: OpcUaSource) -> None:
        async for batch in source.batches():
            self.batches += 1
            self.readings.extend(batch)

    async def until(self, done: Callable[[list[Reading]], bool]) -> list[Reading]:
        async with asyncio.timeout(WAIT_S):
            while not done(self.readings):
                await asyncio.sleep(0.02)
        return self.readings

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def running(settings: OpcUaSettings) -> AsyncIterator[tuple[OpcUaSource, Collector]]:
    async with OpcUaSource(settings) as source:
        collector = Collector(source)
        try:
            yield source, collector
        finally:
            await collector.close()


@pytest.fixture
async def plant() -> AsyncIterator[PlantServer]:
    async with PlantServer(0, ["pump-1", "pump-2"], speed=0, start_ts=1.8e9) as server:
        yield server


def has(asset: str, signal: str, ts: float) -> Callable[[list[Reading]], bool]:
    return lambda rs: any(r.asset == asset and r.signal == signal and r.ts == ts for r in rs)


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_values_timestamps_and_mapping(plant: PlantServer, mode: str) -> None:
    nodes: list[dict[str, Any]] = [
        *plant.node_map(),
        # by browse path, renamed and converted: degC -> degF
        {
            "browse_path": f"{plant.ns}:pump-2/{plant.ns}:temperature",
            "asset": "line-b",
            "signal": "temp_f",
            "scale": 1.8,
            "offset": 32.0,
            "unit": "degF",
        },
    ]
    async with running(opcua_settings(plant, nodes, mode=mode)) as (_, got):
        written = await plant.step()
        ts2, values2 = written["pump-2"]
        await got.until(has("line-b", "temp_f", ts2))
        await got.until(lambda rs: sum(r.ts == ts2 for r in rs) == 11)
    fresh = {(r.asset, r.signal): r for r in got.readings if r.ts == ts2}
    for asset in ("pump-1", "pump-2"):
        ts, values = written[asset]
        for signal in SIGNALS:
            r = fresh[asset, signal]
            assert (r.value, r.ts, r.quality) == (values[signal], ts, Quality.GOOD)
    assert fresh["line-b", "temp_f"].value == pytest.approx(values2["temperature"] * 1.8 + 32.0)


async def test_polling_honours_the_server_operation_limits() -> None:
    async with PlantServer(0, ["a", "b"], speed=0, start_ts=1.8e9, max_nodes_per_read=3) as server:
        settings = opcua_settings(server, server.node_map(), mode="polling")
        async with running(settings) as (_, got):
            ts = (await server.step())["b"][0]
            await got.until(lambda rs: sum(r.ts == ts for r in rs) == 10)
        value_reads = [n for n in server.read_sizes if n > 1]
        assert value_reads, "the source never read in batches"
        assert max(server.read_sizes) <= 3
        assert 3 in value_reads  # it did batch, up to the limit


async def test_polling_hands_on_each_sample_once(plant: PlantServer) -> None:
    settings = opcua_settings(plant, plant.node_map()[:1], mode="polling", poll_interval_s=0.05)
    async with running(settings) as (_, got):
        ts = (await plant.step())["pump-1"][0]
        await got.until(has("pump-1", "temperature", ts))
        before = dropped("opcua_repeated")
        await got.until(lambda _: dropped("opcua_repeated") >= before + 3)  # 3 more polls
    assert [r.ts for r in got.readings].count(ts) == 1


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_server_timestamp_is_the_fallback(plant: PlantServer, mode: str) -> None:
    settings = opcua_settings(plant, plant.node_map()[:2], mode=mode)
    async with running(settings) as (_, got):
        await plant.write("pump-1", "temperature", 20.5, source_ts=None, server_ts=1.8e9 + 7)
        await got.until(lambda rs: any(r.value == 20.5 for r in rs))
        before = time.time()
        await plant.write("pump-1", "vibration", 3.25, source_ts=None, server_ts=None)
        await got.until(lambda rs: any(r.value == 3.25 for r in rs))
        after = time.time()
    by_value = {r.value: r for r in got.readings}
    assert by_value[20.5].ts == 1.8e9 + 7
    assert before <= by_value[3.25].ts <= after  # neither stamp: arrival time


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_bad_and_uncertain_values_are_marked(plant: PlantServer, mode: str) -> None:
    settings = opcua_settings(plant, plant.node_map()[:3], mode=mode)
    async with running(settings) as (_, got):
        await plant.set_status("pump-1", "temperature", "BadSensorFailure")
        await got.until(lambda rs: any(r.quality is Quality.BAD for r in rs))
        await plant.write(
            "pump-1",
            "vibration",
            4.5,
            source_ts=1.8e9 + 1,
            server_ts=1.8e9 + 1,
            status="UncertainLastUsableValue",
        )
        await got.until(lambda rs: any(r.quality is Quality.UNCERTAIN for r in rs))
        await plant.write("pump-1", "current", 9.0, source_ts=1.8e9 + 2, server_ts=None)
        await got.until(has("pump-1", "current", 1.8e9 + 2))
    bad = next(r for r in got.readings if r.quality is Quality.BAD)
    assert (bad.asset, bad.signal) == ("pump-1", "temperature")
    assert math.isnan(bad.value)  # the server sends no value with a Bad status
    uncertain = next(r for r in got.readings if r.quality is Quality.UNCERTAIN)
    assert (uncertain.signal, uncertain.value) == ("vibration", 4.5)
    good = next(r for r in got.readings if r.signal == "current" and r.ts == 1.8e9 + 2)
    assert good.quality is Quality.GOOD


async def test_a_bad_value_from_opc_ua_never_enters_a_window(plant: PlantServer) -> None:
    """Connector marks, frames keep it out: the whole path from the server to a window."""
    nodes = [n for n in plant.node_map() if n["asset"] == "pump-1"][:2]
    frames = FrameBuilder(
        [n["signal"] for n in nodes], rate_hz=1.0, window=3, hop=1, settings=FrameSettings()
    )
    async with running(opcua_settings(plant, nodes)) as (_, got):
        for i in range(8):
            ts = 1.8e9 + 100 + i
            bad = i == 4
            for n in nodes:
                status = "BadSensorFailure" if bad and n["signal"] == "temperature" else None
                await plant.write(
                    "pump-1", n["signal"], 50.0 + i, source_ts=ts, server_ts=ts, status=status
                )
            await got.until(has("pump-1", "vibration", ts))
    frames.ingest(sorted(got.readings, key=lambda r: r.ts))
    windows = frames.take()
    assert any(r.quality is Quality.BAD and r.ts == 1.8e9 + 104 for r in got.readings)
    assert windows, "good windows before the bad value must come out"
    for w in windows:
        covered = {w.ts - k for k in range(3)}
        assert 1.8e9 + 104 not in covered
        assert not any(math.isnan(v) for v in w.values.ravel())
        assert 54.0 not in w.values[:, 0]  # the bad temperature value is nowhere


async def test_missing_nodes_are_reported_once_and_skipped(plant: PlantServer) -> None:
    nodes = [
        *plant.node_map()[:2],
        {"node_id": f"ns={plant.ns};s=pump-9.temperature", "asset": "pump-9", "signal": "t"},
        {"browse_path": f"{plant.ns}:pump-1/{plant.ns}:nope", "asset": "pump-1", "signal": "nope"},
    ]
    with capture_logs() as logs:
        async with running(opcua_settings(plant, nodes)) as (_, got):
            ts = (await plant.step())["pump-1"][0]
            await got.until(lambda rs: sum(r.ts == ts for r in rs) == 2)
    skipped = [e for e in logs if e["event"] == "OPC UA node skipped"]
    assert sorted(e["node"] for e in skipped) == sorted(
        [f"ns={plant.ns};s=pump-9.temperature", f"{plant.ns}:pump-1/{plant.ns}:nope"]
    )
    assert all(e["log_level"] == "error" and e["reason"] for e in skipped)
    assert {r.signal for r in got.readings} == {"temperature", "vibration"}
    assert metrics.REGISTRY.get_sample_value("edge_opcua_nodes", {"state": "missing"}) == 2


async def test_full_buffer_drops_the_oldest_and_counts() -> None:
    assets = [f"p{i}" for i in range(30)]  # 150 nodes, one step overfills a 100 buffer
    async with PlantServer(0, assets, speed=0, start_ts=1.8e9) as server:
        settings = opcua_settings(server, server.node_map(), max_buffered=100, max_batch=1000)
        before = dropped("opcua_buffer_full")
        ts = (await server.step())["p0"][0]  # before the source starts: one value per node
        async with OpcUaSource(settings) as source:
            async with asyncio.timeout(WAIT_S):
                while dropped("opcua_buffer_full") < before + 50:
                    await asyncio.sleep(0.02)
            batch = await anext(aiter(source.batches()))
    assert dropped("opcua_buffer_full") == before + 50
    assert len(batch) == 100
    assert all(r.ts == ts for r in batch)
    # the first 50 of the 150 were dropped, the newest 100 kept
    assert {r.asset for r in batch} == set(assets[10:])


async def test_server_down_at_start_then_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PlantServer(port, ["pump-1"], speed=0, start_ts=1.8e9)
    settings = opcua_settings(
        server, [{"node_id": "ns=2;s=pump-1.flow", "asset": "pump-1", "signal": "flow"}]
    )
    with capture_logs() as logs:
        async with running(settings) as (source, got):
            async with asyncio.timeout(WAIT_S):
                while source.last_error is None:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # several failed attempts: the source must keep trying
            assert got.readings == []
            async with server:
                ts = (await server.step())["pump-1"][0]
                await got.until(has("pump-1", "flow", ts))
                assert error_of(source) is None  # cleared once a session is up
    assert any(e["event"] == "OPC UA connection failed, retrying" for e in logs)


def test_security_none_needs_explicit_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="EDGE_OPCUA__ALLOW_INSECURE"):
        OpcUaSettings(security_policy="None")
    monkeypatch.setenv("EDGE_OPCUA__SECURITY_POLICY", "None")
    with pytest.raises(ConfigError, match="EDGE_OPCUA__ALLOW_INSECURE"):
        load_settings()
    monkeypatch.setenv("EDGE_OPCUA__ALLOW_INSECURE", "true")
    assert load_settings().opcua.security_policy == "None"


def test_config_errors_name_the_setting(tmp_path: Any) -> None:
    bad_id = OpcUaSettings(
        security_policy="None",
        allow_insecure=True,
        nodes=[OpcUaNode(node_id="ns=2;x=oops", asset="a", signal="s")],
    )
    with pytest.raises(ConfigError, match=r"EDGE_OPCUA__NODES\[0\] \(a/s\)"):
        OpcUaSource(bad_id)
    with pytest.raises(ValidationError, match="exactly one of node_id and browse_path"):
        OpcUaSettings.model_validate({"nodes": [{"asset": "a", "signal": "s"}]})
    with pytest.raises(ConfigError, match="EDGE_OPCUA__CERTIFICATE is required"):
        OpcUaSource(OpcUaSettings())
    cert = tmp_path / "c.der"
    cert.write_bytes(b"x")
    missing_key = OpcUaSettings(certificate=cert, private_key=tmp_path / "k.pem")
    with pytest.raises(ConfigError, match=r"EDGE_OPCUA__PRIVATE_KEY=.*no such file"):
        OpcUaSource(missing_key)


async def test_absolute_deadband_filters_small_changes(plant: PlantServer) -> None:
    node = [n for n in plant.node_map() if n["signal"] == "pressure"][:1]
    settings = opcua_settings(plant, node, deadband="absolute", deadband_value=1.0)
    async with running(settings) as (_, got):
        for i, value in enumerate([10.0, 10.5, 10.9, 12.0]):
            ts = 1.8e9 + 10 + i
            await plant.write("pump-1", "pressure", value, source_ts=ts, server_ts=ts)
            await asyncio.sleep(0.15)  # three publishing intervals: one publish per value
        await got.until(lambda rs: any(r.value == 12.0 for r in rs))
    assert [r.value for r in got.readings if r.ts >= 1.8e9 + 10] == [10.0, 12.0]


async def test_stops_promptly_while_handling_a_lost_server(plant: PlantServer) -> None:
    """A cancel that lands inside asyncua's disconnect (which swallows it) still stops us."""
    source = OpcUaSource(opcua_settings(plant, plant.node_map()[:1]))
    await source.__aenter__()
    await plant.step()
    await anext(aiter(source.batches()))
    await plant.stop()  # the source starts closing its session ...
    async with asyncio.timeout(WAIT_S):
        await source.__aexit__(None, None, None)  # ... and is told to stop meanwhile
    assert source._task is not None
    assert source._task.cancelled()
    assert source._task.cancelling() == 1  # the first cancel was enough
