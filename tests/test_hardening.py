"""Issue 13, hostile input against the running agent and real mosquitto: cases 1 to 5 and 9.

Each test puts one case to the agent as the issue found it, then checks that the agent goes on
serving: the case is counted, named and dead-lettered or moved aside, and the next
recommendation is still delivered.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from edge_agent.core.readings import Outgoing, Priority
from edge_agent.daemon.outbox.store import Store
from edge_agent.simulator.broker import Broker
from tests.agent_proc import Listener
from tests.hardening_kit import (
    DEAD,
    RECS,
    START,
    Agent,
    faulty,
    feed,
    received,
    recs_of,
    wait_until,
)

LONG_ASSET = "z" * 65_519  # plant/<it>/telemetry is the longest topic MQTT carries


def _reading(ts: float, **values: float) -> bytes:
    return json.dumps({"ts": ts, **(values or {"temperature": 60.0})}).encode()


def test_case1_an_asset_name_too_long_for_a_topic_never_stops_the_agent(
    broker: Broker, tmp_path: Path
) -> None:
    listener = Listener(broker, RECS, DEAD, "edge-agent/gw-test/digest/#")
    agent = Agent(broker, tmp_path / "state")
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        for i in range(30):  # enough for its history to go upstream as a digest, before
            listener.publish(f"plant/{LONG_ASSET}/telemetry", _reading(START + i, t=i * i))
        wait_until(lambda: not agent.alive(), 8)  # the old agent exited within seconds
        assert agent.alive(), agent.log_text()
        pump = faulty("pump-1")
        feed(listener, pump, 500)
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        # Digests go out after the recommendation: the long name's would have been among them.
        assert wait_until(lambda: any("/digest/" in t for t, _ in received(listener, got)), 30)
        assert agent.alive(), agent.log_text()
        dead = [t for t, _ in got if "/deadletter/name_too_long/" in t]
        assert dead, [t[:80] for t, _ in got]
        assert len(dead[0].encode()) <= 65_535
        assert agent.metric("edge_messages_rejected_total", reason="name_too_long") == 30
        assert agent.stop() == 0, agent.log_text()
        again = Agent(broker, tmp_path / "state")  # a restart on the same state is healthy
        again.running()
        assert again.health()["ready"], again.log_text()
        assert again.stop() == 0, again.log_text()
    finally:
        agent.kill()
        listener.close()


def test_case1_a_queued_message_that_can_never_be_delivered_is_moved_aside(
    broker: Broker, tmp_path: Path
) -> None:
    """What an older agent left queued: a digest whose topic MQTT cannot carry."""
    state = tmp_path / "state"
    state.mkdir()
    store = Store(state / "outbox.db", 64 * 2**20, "normal")
    store.open()
    poison = Outgoing(
        f"edge-agent/gw-test/digest/{LONG_ASSET}", b"{}", "poison-1", LONG_ASSET, Priority.DIGEST
    )
    store.insert([poison], frozenset())
    store.close()
    listener = Listener(broker, RECS)
    agent = Agent(broker, state)
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        moved = agent.wait_for_log("outbox_moved_aside", 30)
        assert moved["msg_id"] == "poison-1"
        assert moved["reason"] == "topic_too_long"
        feed(listener, faulty("pump-1"), 500)
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        assert agent.metric("edge_outbox_aside_total", reason="topic_too_long") == 1
        assert agent.stop() == 0, agent.log_text()
        again = Agent(broker, state)
        again.running()
        assert again.health()["ready"], again.log_text()
        assert again.health()["outbox_depth"] == 0
        assert again.stop() == 0, again.log_text()
    finally:
        agent.kill()
        listener.close()
    with sqlite3.connect(state / "outbox.db") as db:
        kept = db.execute("SELECT msg_id, reason, topic_chars FROM aside").fetchall()
    assert kept == [("poison-1", "topic_too_long", len(poison.topic))]


def test_case2_one_bad_timestamp_cannot_blind_an_asset(broker: Broker, tmp_path: Path) -> None:
    listener = Listener(broker, RECS, DEAD)
    agent = Agent(broker, tmp_path / "state")
    pump = faulty("pump-2")
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        last = feed(listener, pump, 100)
        # Milliseconds where seconds are configured, then one reading at 1e30.
        listener.publish("plant/pump-2/telemetry", _reading((last + 1) * 1000))
        listener.publish("plant/pump-2/telemetry", _reading(1e30))
        feed(listener, pump, 400)
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        assert {r["asset"] for r in recs_of(got)} == {"pump-2"}
        dead = [t for t, _ in received(listener, got) if "/deadletter/implausible_ts/" in t]
        assert len(dead) == 2, dead
        said = agent.events("message_rejected")[0]
        assert said["reason"] == "implausible_ts"
        assert "EDGE_INGEST__TS_UNIT=ms" in said["detail"], said
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()


def test_case3_deeply_nested_json_is_rejected_and_counted(broker: Broker, tmp_path: Path) -> None:
    listener = Listener(broker, DEAD)
    agent = Agent(broker, tmp_path / "state")
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        for depth in (1000, 5000):
            listener.publish("plant/pump-3/telemetry", b"[" * depth)
        listener.publish("plant/pump-3/telemetry", b'{"a":' * 3000)
        assert wait_until(lambda: len(received(listener, got)) >= 3, 20), got
        assert {t.split("/")[3] for t, _ in got} == {"too_deep"}
        assert agent.metric("edge_messages_rejected_total", reason="too_deep") == 3
        assert not agent.events("mqtt_handler_failed"), agent.log_text()
        assert "RecursionError" not in agent.log_text()
        feed(listener, faulty("pump-3"), 40)
        assert wait_until(lambda: agent.metric("edge_readings_total", connector="mqtt") >= 200)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()


def test_case4_the_deadletter_path_is_bounded_in_bytes(broker: Broker, tmp_path: Path) -> None:
    listener = Listener(broker, DEAD)
    agent = Agent(broker, tmp_path / "state")
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        listener.publish(f"plant/{LONG_ASSET}/telemetry", b"not json")  # a bad payload too
        listener.publish("plant/pump-4/telemetry", b'{"ts": 1, "pad": "' + b"x" * 10_000_000)
        assert wait_until(lambda: len(received(listener, got)) >= 2, 30), [t[:80] for t, _ in got]
        by_reason = {t.split("/")[3]: (t, p) for t, p in got}
        long_topic, payload = by_reason["name_too_long"]
        assert len(long_topic.encode()) <= 65_535
        assert payload == b"not json"
        _, big = by_reason["too_large"]
        assert len(big) == 65_536  # EDGE_INGEST__MAX_PAYLOAD_BYTES, not 10 MB
        assert agent.metric("edge_deadletter_cut_total", what="payload") == 1
        assert agent.metric("edge_deadletter_cut_total", what="topic") == 1
        assert not agent.events("mqtt_handler_failed"), agent.log_text()
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()


def test_case5_a_flood_of_names_frees_its_slots(broker: Broker, tmp_path: Path) -> None:
    env = {
        "EDGE_FRAMES__MAX_ASSETS": "20",
        "EDGE_FRAMES__ASSET_IDLE_S": "2",
        "EDGE_RETENTION__ASSET_IDLE_S": "2",
    }
    listener = Listener(broker, RECS)
    agent = Agent(broker, tmp_path / "state", env)
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        for i in range(200):  # a scan: typos, one reading each
            listener.publish(f"plant/scan-{i}/telemetry", _reading(START + i))
        assert wait_until(
            lambda: agent.metric("edge_readings_dropped_total", reason="too_many_assets") > 0
        ), agent.log_text()
        assert agent.metric("edge_assets_tracked", part="frames") == 20
        wait_until(lambda: False, 3)  # idle for longer than asset_idle_s
        feed(listener, faulty("pump-5"), 500)
        assert wait_until(lambda: bool(recs_of(received(listener, got))), 60), agent.log_text()
        assert {r["asset"] for r in recs_of(got)} == {"pump-5"}
        assert agent.metric("edge_assets_evicted_total", part="frames") >= 20
        assert agent.metric("edge_assets_tracked", part="frames") <= 2
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()


def test_case9_signals_no_model_reads_are_said_and_not_sent_upstream(
    broker: Broker, tmp_path: Path
) -> None:
    listener = Listener(broker, "edge-agent/gw-test/digest/#")
    agent = Agent(broker, tmp_path / "state")
    pump = faulty("pump-9", onset_s=10_000)
    got: list[tuple[str, bytes]] = []
    try:
        agent.running()
        for _ in range(700):
            ts, values = pump.step()
            body = json.dumps({"ts": ts, **values, "rpm": 1480.0 + ts % 13}).encode()
            listener.publish("plant/pump-9/telemetry", body)
        assert wait_until(lambda: bool(received(listener, got)), 30), agent.log_text()
        said = [e for e in agent.events("readings_dropped") if e.get("reason") == "unknown_signal"]
        assert len(said) == 1, said  # one line per interval, naming the signal
        assert said[0]["signal"] == "rpm"
        assert agent.metric("edge_readings_dropped_total", reason="unknown_signal") == 700
        assert all(b"rpm" not in p for _, p in got), got[0][1][:300]
        assert any(b"temperature" in p for _, p in got)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()
