"""Issue 13 against the running agent: a read-only state directory (case 6), a restart
mid-incident (case 7), and SIGTERM ending the agent within 10 s in every state a test can put
it in."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest

from edge_agent.simulator.broker import Broker, running_broker
from edge_agent.simulator.plant import PumpStream
from tests.agent_proc import Listener
from tests.hardening_kit import (
    CAN_MOUNT,
    RECS,
    Agent,
    faulty,
    feed,
    received,
    recs_of,
    wait_until,
)

STOP_WITHIN_S = 10.0


@pytest.mark.skipif(not CAN_MOUNT, reason="needs root and unshare(1) for a read-only mount")
def test_case6_a_read_only_state_directory_degrades_and_never_hangs(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = Agent(broker, state)  # an outbox and evidence from before the disk went read-only
    first.running()
    assert first.stop() == 0, first.log_text()
    listener = Listener(broker, RECS)
    agent = Agent(broker, state, read_only=True)
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        assert agent.health()["outbox_store"].startswith("memory"), agent.health()
        feed(listener, faulty("pump-6"), 600)  # a raise, then its evidence window closes
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        assert wait_until(
            lambda: agent.metric("edge_evidence_records_total", outcome="failed") >= 1, 30
        ), agent.log_text()
        assert agent.metric("edge_rule_state_errors_total", op="write") >= 1
        feed(listener, faulty("pump-6b", seed=5), 50)  # still ingesting
        assert wait_until(lambda: agent.health()["last_reading_age_s"] < 5)
        assert agent.alive(), agent.log_text()
        assert agent.health()["ready"], agent.log_text()
        code, took = agent.stop_timed()
        assert code == 0, agent.log_text()
        assert took < STOP_WITHIN_S, took
    finally:
        agent.kill()
        listener.close()


def test_case7_a_restart_mid_incident_raises_nothing_again_and_resolves_the_raise(
    broker: Broker, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    listener = Listener(broker, RECS)
    pump = faulty("pump-7", "overheating", onset_s=300.0)
    got: list[tuple[str, bytes]] = []
    agent = Agent(broker, state)
    try:
        agent.running()
        last = feed(listener, pump, 400)
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        last = feed(listener, pump, 150)  # let it escalate if it will, before the crash
        wait_until(lambda: False, 2)
        before = [r for r in recs_of(received(listener, got)) if r["kind"] == "raise"]
        assert before, got
        open_id = before[-1]["id"]
        agent.stop(signal.SIGKILL)
        got.clear()
        agent = Agent(broker, state)  # the restart, mid-incident
        agent.running()
        last = feed(listener, pump, 200)  # the machine still hot
        cool = PumpStream("pump-7", seed=3, start_ts=last + 1)  # the cause fixed: back to normal
        feed(listener, cool, 400)

        def resolved() -> list[dict[str, object]]:
            return [r for r in recs_of(received(listener, got)) if r["kind"] == "resolved"]

        assert wait_until(lambda: bool(resolved()), 60), agent.log_text()
        after = recs_of(got)
        again = [r for r in after if r["kind"] == "raise" and r["rule_id"] == "overheating"]
        assert not again, again
        assert resolved()[0]["resolves"] == open_id
        assert {r["id"] for r in before} >= {open_id}
        assert agent.metric("edge_rule_errors_total", rule="overheating") == 0, agent.log_text()
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()


def _flood(listener: Listener, stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        payload = [b"[" * 2000, b"{not json", json.dumps({"ts": 1e30, "a": 1}).encode()][n % 3]
        listener.publish(f"plant/hostile-{n % 50}/telemetry", payload, qos=0)


def test_sigterm_ends_the_agent_within_10s_in_every_state(broker: Broker, tmp_path: Path) -> None:
    """Running with traffic; under a flood; uplink down with a backlog; sensors down at start."""
    took: dict[str, float] = {}
    listener = Listener(broker)
    try:
        agent = Agent(broker, tmp_path / "a")
        agent.running()
        feed(listener, faulty("pump-1"), 200)
        code, took["running"] = agent.stop_timed()
        assert code == 0, agent.log_text()

        agent = Agent(broker, tmp_path / "b")
        agent.running()
        stop = threading.Event()
        flood = threading.Thread(target=_flood, args=(listener, stop), daemon=True)
        flood.start()
        wait_until(lambda: agent.metric("edge_messages_rejected_total") > 500, 30)
        code, took["flood"] = agent.stop_timed()
        stop.set()
        flood.join(10)
        assert code == 0, agent.log_text()

        with running_broker() as upstream:
            env = {"EDGE_UPLINK__HOST": upstream.host, "EDGE_UPLINK__PORT": str(upstream.port)}
            agent = Agent(broker, tmp_path / "c", env)
            agent.running()
            upstream.stop()
            feed(listener, faulty("pump-2"), 500)
            assert wait_until(lambda: agent.health()["outbox_depth"] > 0, 30), agent.log_text()
            code, took["uplink down, backlog"] = agent.stop_timed()
            assert code == 0, agent.log_text()

        broker.stop()
        agent = Agent(broker, tmp_path / "d")
        agent.start()
        agent.wait_for_log("metrics endpoint up", 60)
        wait_until(lambda: False, 2)
        code, took["sensors down at start"] = agent.stop_timed()
        assert code == 0, agent.log_text()
        broker.start()
    finally:
        agent.kill()
        listener.close()
    print(took)
    slow = {state: s for state, s in took.items() if s >= STOP_WITHIN_S}
    assert not slow, took
