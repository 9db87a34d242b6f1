"""/health asks every source: an agent reading OPC UA only shows that link, down and up.

The agent runs in process against a real asyncua server (and a real mosquitto for its
uplink); the server is stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.daemon.app import run_agent
from edge_agent.daemon.settings import Settings
from edge_agent.simulator.broker import Broker, free_port
from edge_agent.simulator.opcua_server import PlantServer

WAIT_S = 60.0  # a guard against hanging, never a speed requirement

Answer = tuple[int, dict[str, Any]]


def _get_health(port: int) -> Answer:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:  # 503 while not ready: the body still says why
        with err:
            return err.code, json.loads(err.read())


async def health_until(port: int, done: Callable[[Answer], bool]) -> Answer:
    deadline = time.monotonic() + WAIT_S
    while not done(answer := await asyncio.to_thread(_get_health, port)):
        assert time.monotonic() < deadline, f"/health still says {answer}"
        await asyncio.sleep(0.1)
    return answer


async def started(agent: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Wait for READY; an agent that fails first raises its error here."""
    waiter = asyncio.ensure_future(ready.wait())
    done, _ = await asyncio.wait({agent, waiter}, timeout=WAIT_S, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if agent in done:
        agent.result()
    assert ready.is_set(), "no READY"


def opcua_link(*, up: bool) -> Callable[[Answer], bool]:
    return lambda answer: answer[1]["connected"].get("opcua") is up


async def test_health_follows_the_opcua_link_through_a_server_outage(
    broker: Broker, tmp_path: Path
) -> None:
    server = PlantServer(0, ["pump-1"], speed=4.0, start_ts=1.8e9)
    await server.start()
    port = free_port()
    settings = Settings.model_validate(
        {
            "agent": {"state_dir": tmp_path, "gateway_id": "gw", "sources": ["opcua"]},
            "mqtt": {"host": broker.host, "port": broker.port},
            "opcua": {
                "endpoint": server.endpoint,
                "nodes": server.node_map(),
                "security_policy": "None",
                "allow_insecure": True,
                "publishing_interval_ms": 100,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
            },
            "service": {"http_port": port},
        }
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    agent = asyncio.create_task(run_agent(settings, stop, ready))
    try:
        await started(agent, ready)
        both_up = {"uplink": True, "opcua": True}
        status, health = await health_until(port, lambda a: a[1]["connected"] == both_up)
        assert (status, health["ready"]) == (200, True)

        await server.stop()
        status, health = await health_until(port, opcua_link(up=False))
        assert (status, health["ready"]) == (503, False)
        assert set(health["connected"]) == {"uplink", "opcua"}

        await server.start()  # same port, a new server
        status, health = await health_until(port, opcua_link(up=True))
        assert (status, health["ready"]) == (200, True)
    finally:
        stop.set()
        await asyncio.wait_for(agent, WAIT_S)
        await server.stop()
