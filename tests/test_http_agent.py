"""Scrape the running agent's /metrics: counters move as readings, drops and advice happen."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.simulator.broker import Broker, free_port
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def _until(
    port: int, check: Callable[[Samples], bool], agent: AgentProcess, timeout_s: float = 60
) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = _scrape(port)
        if check(samples):
            return samples
        assert time.monotonic() < deadline, agent.log_text()
        time.sleep(0.2)


def test_counters_move_with_readings_drops_and_recommendations(
    broker: Broker, tmp_path: Path
) -> None:
    port = free_port()
    agent = AgentProcess(broker, tmp_path / "state", env={"EDGE_SERVICE__HTTP_PORT": str(port)})
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    agent.start()
    try:
        agent.wait_for_log("agent running")
        # "agent running" comes once its sources' subscriptions are acknowledged
        before = _scrape(port)
        readings0 = _total(before, "edge_readings_total")
        rejected0 = _total(before, "edge_messages_rejected_total")
        recs0 = _total(before, "edge_recommendations_total")

        # Readings: 100 seconds of one pump, 4 signals or more per second.
        pump = PumpStream("pump-1", seed=3, start_ts=START, fault=FaultSpec("cavitation", 900.0))
        rows = [pump.step() for _ in range(100)]
        listener.publish(
            "plant/pump-1/telemetry", json.dumps([{"ts": t, **v} for t, v in rows]).encode()
        )
        n_values = sum(len(v) for _, v in rows)
        after = _until(
            port, lambda s: _total(s, "edge_readings_total") >= readings0 + n_values, agent
        )
        assert _total(after, "edge_readings_total") == readings0 + n_values

        # A payload that is not JSON is rejected and counted.
        listener.publish("plant/pump-1/telemetry", b"{not json")
        _until(port, lambda s: _total(s, "edge_messages_rejected_total") == rejected0 + 1, agent)

        # The fault develops: a recommendation is produced and counted by severity.
        for _ in range(11):
            rows = [pump.step() for _ in range(100)]
            listener.publish(
                "plant/pump-1/telemetry", json.dumps([{"ts": t, **v} for t, v in rows]).encode()
            )
        final = _until(port, lambda s: _total(s, "edge_recommendations_total") > recs0, agent)
        assert _total(final, "edge_windows_total", outcome="scored") > 0
        # The lag probe observes every 0.25 s from the start: on a loaded machine its first
        # observation may come after the recommendation.
        _until(port, lambda s: _total(s, "edge_event_loop_lag_seconds_count") > 0, agent)
    finally:
        agent.kill()
        listener.close()
