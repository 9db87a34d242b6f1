"""SIGHUP reloads the rule packs in the running agent: a valid pack replaces the old one,
an invalid one is rejected with its errors logged and the old pack keeps serving."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

from edge_agent.rules.pack import default_pack_path
from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0


def _publish(listener: Listener, pumps: list[PumpStream], seconds: int) -> None:
    for _ in range(seconds):
        for pump in pumps:
            ts, values = pump.step()
            listener.publish(
                f"plant/{pump.asset}/telemetry", json.dumps({"ts": ts, **values}).encode()
            )


def _wait_events(agent: AgentProcess, event: str, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(1 for x in agent.lines if x.get("event") == event) < count:
        assert time.monotonic() < deadline, agent.log_text()
        time.sleep(0.1)


def test_sighup_replaces_a_valid_pack_and_keeps_the_old_one_on_errors(
    broker: Broker, tmp_path: Path
) -> None:
    pack = tmp_path / "pack.yaml"
    original = default_pack_path().read_text()
    pack.write_text(original)
    pumps = [
        PumpStream("pump-1", seed=7, start_ts=START),
        PumpStream("pump-2", seed=8, start_ts=START, fault=FaultSpec("overheating", 900.0)),
    ]
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    agent = AgentProcess(broker, tmp_path / "state", {"EDGE_RULES__PACKS": json.dumps([str(pack)])})
    agent.start()
    try:
        agent.wait_for_log("agent running")
        time.sleep(0.5)
        _publish(listener, pumps, 300)

        # A broken pack: rejected, logged with its errors, the old pack keeps running.
        pack.write_text(original.replace("rules:", "rulez:", 1))
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        _wait_events(agent, "rule pack reload rejected, the old pack keeps running", 1)
        rejected = next(
            x
            for x in agent.lines
            if x.get("event") == "rule pack reload rejected, the old pack keeps running"
        )
        assert "rulez" in rejected["errors"] or "rules" in rejected["errors"], rejected

        # A valid pack with a new version: replaces the old one without a restart.
        new_version = "9.9.9"
        pack.write_text(re.sub(r"(?m)^version: .*$", f"version: {new_version}", original, count=1))
        agent.proc.send_signal(signal.SIGHUP)
        _wait_events(agent, "rule pack replaced", 1)

        _publish(listener, pumps, 900)  # the fault starts at 900 s
        deadline = time.monotonic() + 30
        received: list[dict[str, object]] = []
        while time.monotonic() < deadline and not received:
            received += [json.loads(p) for _, p in listener.drain()]
            time.sleep(0.2)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()
    assert received, agent.log_text()
    assert {r["asset"] for r in received} == {"pump-2"}
    assert all(r["rule_pack"]["version"] == new_version for r in received), received  # type: ignore[index]
