"""The whole agent through an uplink outage: recommendations made while the upstream broker
is down for 30 s are all delivered, in order per asset, once it is back (issue 5)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import jsonschema

from edge_agent.rules.recommendation import recommendation_schema
from edge_agent.simulator.broker import running_broker
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0
FAULTS = ("cavitation", "overheating", "misalignment", "stuck_sensor")


def test_recommendations_made_during_a_30s_uplink_outage_all_arrive(tmp_path: Path) -> None:
    pumps = [
        PumpStream(f"pump-{i}", seed=40 + i, start_ts=START, fault=FaultSpec(kind, 900.0))
        for i, kind in enumerate(FAULTS, 1)
    ]
    # The upstream broker keeps its sessions across its restart, and the test's subscriber
    # has one from before the outage (as a real upstream subscriber must: a broker drops what
    # nobody is subscribed to, and the agent may deliver before a new subscriber is in).
    keep = Path(tempfile.mkdtemp(prefix="edge-mosq-keep-"))  # not tmp_path (0700): mosquitto
    keep.chmod(0o777)  # started as root saves as its own user
    durable = f"persistence true\npersistence_location {keep}/\n"
    with running_broker() as sensors, running_broker(durable) as upstream:
        agent = AgentProcess(
            sensors,
            tmp_path / "state",
            {
                "EDGE_UPLINK__HOST": upstream.host,
                "EDGE_UPLINK__PORT": str(upstream.port),
                # The uplink's reconnect backoff (EDGE_MQTT's, the sensor broker stays up)
                # capped at 1 s instead of 30: delivery starts soon after the outage ends.
                "EDGE_MQTT__RECONNECT_MAX_S": "1",
            },
        )
        feed = Listener(sensors)
        listener = Listener(upstream, "edge-agent/gw-test/recommendations/#", session="observer")
        agent.start()
        try:
            agent.wait_for_log("agent running")
            upstream.stop()
            outage_started = time.monotonic()
            for _ in range(1200):  # every fault starts at 900 s simulated
                for pump in pumps:
                    ts, values = pump.step()
                    body = json.dumps({"ts": ts, **values}).encode()
                    feed.publish(f"plant/{pump.asset}/telemetry", body)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _made(agent) < len(FAULTS):
                time.sleep(0.2)
            made_during_outage = _made(agent)
            assert made_during_outage >= len(FAULTS), agent.log_text()
            time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
            upstream.start()
            produced = _ids(agent)
            deadline = time.monotonic() + 60
            got: list[dict[str, object]] = []
            while time.monotonic() < deadline and not produced <= {str(r["id"]) for r in got}:
                got += [json.loads(p) for _, p in listener.drain()]
                time.sleep(0.2)
            assert agent.stop() == 0, agent.log_text()
        finally:
            agent.kill()
            feed.close()
            listener.close()
            shutil.rmtree(keep, ignore_errors=True)

    received = [str(r["id"]) for r in got]
    missing = produced - set(received)
    assert not missing, f"lost {missing}"
    duplicates = len(received) - len(set(received))
    print(f"{len(produced)} recommendations made during the outage, {duplicates} duplicates")
    schema = recommendation_schema()
    for rec in got:
        jsonschema.validate(rec, schema)
    # Per asset, in the order the agent made them (ids are time-ordered).
    for asset in {str(r["asset"]) for r in got}:
        ids = [str(r["id"]) for r in got if r["asset"] == asset]
        first_seen = list(dict.fromkeys(ids))
        assert first_seen == sorted(first_seen), asset
    assert {r["asset"] for r in got} == {p.asset for p in pumps}


def _made(agent: AgentProcess) -> int:
    return len(_ids(agent))


def _ids(agent: AgentProcess) -> set[str]:
    return {str(x["id"]) for x in list(agent.lines) if x.get("event") == "recommendation"}
