"""Recovery: the OPC UA server goes away for 10 s and comes back on the same port.

Inherently slow (about 25 s): the outage itself is part of the acceptance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from structlog.testing import capture_logs

from edge_agent.connectors.settings import OpcUaSettings
from edge_agent.core import metrics
from edge_agent.simulator.opcua_server import PlantServer
from tests.test_opcua import running

OUTAGE_S = 10.0
RESUME_LIMIT_S = 10.0


def reconnects() -> float:
    return metrics.REGISTRY.get_sample_value("edge_reconnects_total", {"connector": "opcua"}) or 0.0


async def test_recovers_from_a_server_restart_without_duplicates() -> None:
    # speed 4: four simulated seconds per wall second, so readings flow all the time
    server = PlantServer(0, ["pump-1", "pump-2"], speed=4.0, start_ts=1.8e9)
    await server.start()
    missing = f"ns={server.ns};s=pump-7.flow"
    nodes = [*server.node_map(), {"node_id": missing, "asset": "pump-7", "signal": "flow"}]
    # Default reconnect and watchdog settings: the acceptance holds for what ships.
    settings = OpcUaSettings.model_validate(
        {
            "endpoint": server.endpoint,
            "nodes": nodes,
            "security_policy": "None",
            "allow_insecure": True,
            "publishing_interval_ms": 100,
            "sampling_interval_ms": 0,
        }
    )
    before = reconnects()
    try:
        with capture_logs() as logs:
            async with running(settings) as (source, got):
                await got.until(lambda rs: len(rs) >= 40)
                await server.stop()
                down_at = time.monotonic()
                await asyncio.sleep(OUTAGE_S)
                count_during = len(got.readings)
                assert source.last_error is not None  # it is trying, not exited or wedged
                await server.start()  # same port, new server, new session ids
                back_at = time.monotonic()
                await got.until(lambda rs: len(rs) >= count_during + 20)
                resumed_s = time.monotonic() - back_at
                await asyncio.sleep(1.0)  # let any duplicate subscription show itself
                subscriptions = server.subscription_count()
    finally:
        await server.stop()

    assert resumed_s < RESUME_LIMIT_S
    assert subscriptions == 1
    keys = Counter((r.asset, r.signal, r.ts) for r in got.readings)
    assert [k for k, n in keys.items() if n > 1] == []
    assert reconnects() == before + 1
    gap = next(e for e in logs if e["event"] == "OPC UA readings resumed")
    assert OUTAGE_S <= gap["gap_s"] <= time.monotonic() - down_at
    assert [e["node"] for e in logs if e["event"] == "OPC UA node skipped"] == [missing]
    # readings go on in time order per signal across the restart
    temps = [r.ts for r in got.readings if (r.asset, r.signal) == ("pump-1", "temperature")]
    assert temps == sorted(temps)
