"""Overload the real agent: degraded mode engages, advice still flows, the mode clears."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.simulator.broker import Broker, free_port
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0
HEALTHY = 40
SECONDS = 1200
CHUNK_S = 300  # rows a message: big enough that its processing lags the loop past the bar


def _gauge(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_overload_engages_degraded_mode_advice_continues_and_it_clears(
    broker: Broker, tmp_path: Path
) -> None:
    port = free_port()
    agent = AgentProcess(
        broker,
        tmp_path / "state",
        env={
            "EDGE_SERVICE__HTTP_PORT": str(port),
            "EDGE_SERVICE__LAG_INTERVAL_S": "0.05",
            # The burst below must push the loop past this: since the MQTT hot path reads
            # the socket itself, this burst no longer lags it past 100 ms (it did before).
            "EDGE_SERVICE__LAG_HIGH_S": "0.04",
            "EDGE_SERVICE__LAG_LOW_S": "0.015",
            # Long enough that one episode spans the burst: with 1 s it could clear and engage
            # again between the burst's chunks, and the advice fall in a gap (1 run in 4).
            "EDGE_SERVICE__CLEAR_AFTER_S": "5",
        },
    )
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    pumps = [PumpStream("pump-bad", seed=1, start_ts=START, fault=FaultSpec("cavitation", 600.0))]
    pumps += [PumpStream(f"pump-{i}", seed=10 + i, start_ts=START) for i in range(HEALTHY)]
    agent.start()
    try:
        agent.wait_for_log("agent running")
        # "agent running" comes once its sources' subscriptions are acknowledged
        assert _gauge(port, "edge_degraded") == 0
        for _ in range(SECONDS // CHUNK_S):
            for pump in pumps:
                rows = [pump.step() for _ in range(CHUNK_S)]
                body = json.dumps([{"ts": t, **v} for t, v in rows]).encode()
                listener.publish(f"plant/{pump.asset}/telemetry", body)
        agent.wait_for_log("degraded mode", timeout_s=60)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _gauge(port, "edge_degraded") != 0:
            time.sleep(0.2)
        assert _gauge(port, "edge_degraded") == 0, agent.log_text()
        time.sleep(0.5)
        received = [json.loads(p) for _, p in listener.drain()]
    finally:
        agent.kill()
        listener.close()

    events = [(x.get("event"), x.get("state"), x.get("asset")) for x in agent.lines]
    # Degraded mode may engage and clear more than once under the burst: advice must go on
    # in one of its episodes, and the last episode must have cleared.
    episodes: list[list[object]] = []  # the assets advised in each engaged..cleared span
    engaged = False
    for e in events:
        if e[:2] == ("degraded mode", "engaged"):
            assert not engaged, events
            engaged = True
            episodes.append([])
        elif e[:2] == ("degraded mode", "cleared"):
            assert engaged, "cleared before it engaged"
            engaged = False
        elif engaged and e[0] == "recommendation":
            episodes[-1].append(e[2])
    assert episodes, events
    assert not engaged, "degraded mode did not clear"
    assert any("pump-bad" in advised for advised in episodes), events
    assert "pump-bad" in {r["asset"] for r in received}, received
