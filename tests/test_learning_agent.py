"""Learning through the running agent and a real broker: health, restart, relearn, failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edge_agent.simulator.broker import Broker
from tests import learn_kit as kit
from tests.agent_proc import ROOT, AgentProcess, Listener

ASSET = "sp-1"
STATE = f"edge-agent/gw-test/assets/{ASSET}/state"
ENV = {"EDGE_ASSETS__PROFILES": json.dumps([kit.PROFILE_JSON])}


def _publish(listener: Listener, payloads: list[bytes]) -> None:
    for body in payloads:
        listener.publish(f"plant/{ASSET}/telemetry", body)


def _health(agent: AgentProcess) -> dict[str, object]:
    port = agent.wait_for_log("metrics endpoint up")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        health: dict[str, object] = json.loads(r.read())
    return health


def _wait_for(
    listener: Listener, got: list[tuple[str, bytes]], want: str, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += listener.drain()
        if any(want in t for t, _ in got):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing on {want}: {[t for t, _ in got]}")


def _states(got: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    return [json.loads(p) for t, p in got if t == STATE]


def test_learned_model_survives_a_restart_and_a_relearn_command_starts_over(
    broker: Broker, tmp_path: Path
) -> None:
    listener = Listener(broker, STATE, f"edge-agent/gw-test/recommendations/{ASSET}")
    got: list[tuple[str, bytes]] = []
    try:
        first = AgentProcess(broker, tmp_path / "state", ENV)
        first.start()
        try:
            first.wait_for_log("agent running")
            _publish(listener, kit.payloads(kit.rows(230, 21)))
            first.wait_for_log("learned model scoring", timeout_s=60)
            health = _health(first)
            learning = health["learning"]
            assert isinstance(learning, dict)
            assert learning["counts"] == {"learning": 0, "scoring": 1, "failed": 0}
            assert first.stop() == 0, first.log_text()
        finally:
            first.kill()
        # The state goes out through the outbox: give its last message time to arrive.
        deadline = time.monotonic() + 10
        got += listener.drain()
        while time.monotonic() < deadline and [s["state"] for s in _states(got)][-1:] != [
            "scoring"
        ]:
            time.sleep(0.1)
            got += listener.drain()
        assert [s["state"] for s in _states(got)][-1] == "scoring"

        second = AgentProcess(broker, tmp_path / "state", ENV)
        second.start()
        try:
            second.wait_for_log("agent running")
            # No learning after the restart: a restricted suction is recommended at once.
            _publish(listener, kit.payloads(kit.rows(60, 22, flow_drop_from=15), first=300))
            _wait_for(listener, got, "/recommendations/", 30)
            assert not [x for x in second.lines if x.get("event") == "learning"]

            env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
            env |= {"EDGE_MQTT__HOST": broker.host, "EDGE_MQTT__PORT": str(broker.port)}
            env |= {"EDGE_AGENT__GATEWAY_ID": "gw-test"}
            done = subprocess.run(
                [sys.executable, "-m", "edge_agent.daemon.cli", "model", "relearn", ASSET],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"{ASSET}: learning recording" in done.stdout
            second.wait_for_log("relearn")
            assert _gone(tmp_path)  # the model is forgotten: a restart would learn again
            assert second.stop() == 0, second.log_text()
        finally:
            second.kill()
    finally:
        listener.close()


def _gone(tmp_path: Path) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not (tmp_path / "state" / "models" / ASSET).exists():
            return True
        time.sleep(0.1)
    return False


def test_a_fit_the_data_cannot_make_is_a_failed_state_with_the_reason(
    broker: Broker, tmp_path: Path
) -> None:
    values = kit.rows(215, 23)
    values[:, 2] = 4.0  # the pressure transmitter reads one value throughout
    listener = Listener(broker, STATE)
    agent = AgentProcess(broker, tmp_path / "state", ENV)
    agent.start()
    got: list[tuple[str, bytes]] = []
    try:
        agent.wait_for_log("agent running")
        _publish(listener, kit.payloads(values))
        agent.wait_for_log("learning failed", timeout_s=60)
        time.sleep(0.5)
        health = _health(agent)
        assert agent.stop() == 0, agent.log_text()
        got += listener.drain()
    finally:
        agent.kill()
        listener.close()
    last = _states(got)[-1]
    assert last["state"] == "failed"
    assert "constant" in str(last["reason"])
    assert "'pressure'" in str(last["reason"])
    learning = health["learning"]
    assert isinstance(learning, dict)
    assert learning["assets"] == {ASSET: {"state": "failed", "reason": last["reason"]}}
    # Retained: whoever looks later still sees why.
    late = Listener(broker, STATE)
    try:
        time.sleep(0.5)
        retained = [json.loads(p) for _, p in late.drain()]
    finally:
        late.close()
    assert retained
    assert retained[-1]["state"] == "failed"
