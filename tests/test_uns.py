"""The Unified Namespace: recommendations as events, asset states retained, under the site path.

The unit tests feed `Namespace` the messages the pipeline builds; the agent test runs the
real agent over mosquitto with EDGE_UNS set and subscribes to `<enterprise>/#`.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from edge_agent.connectors.settings import UnsSettings
from edge_agent.connectors.uns import Namespace, open_namespace
from edge_agent.core import logs, metrics
from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener


@pytest.fixture(autouse=True)
def _logs_to_a_live_stream() -> None:
    """Log into a stream of this test's own: an earlier test may have closed the one it set."""
    logs.configure("debug", "json", io.StringIO())


SETTINGS = UnsSettings(
    enterprise="acme",
    site="north",
    area="pumping",
    line="line-1",
    assets={"pump-9": {"area": "utilities", "line": "cooling"}},
)


def rec(asset: str, kind: str, rule: str | None = "cavitation", **extra: object) -> Outgoing:
    payload: dict[str, object] = {"id": new_id(), "kind": kind, "asset": asset, "rule_id": rule}
    payload |= {"window_end": "2025-06-15T15:00:00.000Z", "title": f"{kind} on {asset}"}
    payload |= extra
    topic = f"edge-agent/gw/recommendations/{asset}"
    return Outgoing(topic, json.dumps(payload).encode(), str(payload["id"]), key=asset)


def states(out: list[Outgoing]) -> list[dict[str, object]]:
    return [json.loads(m.payload) for m in out if m.topic.endswith("/state")]


def test_off_unless_an_enterprise_is_set() -> None:
    assert open_namespace(UnsSettings(), "gw") is None
    assert open_namespace(SETTINGS, "gw") is not None


def test_a_raise_is_an_event_and_the_state_is_retained_under_the_assets_place() -> None:
    ns = Namespace(SETTINGS, "gw")
    raised = rec("pump-3", "raise", severity="warning", cause={"class": "cavitation"})
    event, state = ns.messages([raised])
    assert event.topic == "acme/north/pumping/line-1/pump-3/edge-agent/recommendation"
    assert event.payload == raised.payload  # the same plain JSON as upstream
    assert not event.retain
    assert event.priority is Priority.RECOMMENDATION
    assert state.topic == "acme/north/pumping/line-1/pump-3/edge-agent/state"
    assert state.retain
    body = json.loads(state.payload)
    assert body["state"] == "alert"
    assert body["open"][0]["cause"] == "cavitation"
    assert body["open"][0]["severity"] == "warning"
    # An asset placed elsewhere in the plant is published there.
    (other, _) = ns.messages([rec("pump-9", "needs_review", rule=None)])
    assert other.topic.startswith("acme/north/utilities/cooling/pump-9/edge-agent/")


def test_the_state_follows_raises_escalations_resolutions_and_reviews() -> None:
    ns = Namespace(SETTINGS, "gw")
    first = rec("pump-1", "raise", severity="warning")
    seq = [
        first,
        rec("pump-1", "raise", severity="critical"),  # escalation: the rule's entry replaced
        rec("pump-1", "raise", rule="overheating", severity="warning"),
        rec("pump-1", "resolved", resolves=str(json.loads(first.payload)["id"])),
        rec("pump-1", "resolved", rule="overheating"),
        rec("pump-1", "needs_review", rule=None),
    ]
    seen = [states(ns.messages([m]))[0] for m in seq]
    assert [s["state"] for s in seen] == ["alert", "alert", "alert", "alert", "normal", "review"]
    assert [len(s["open"]) for s in seen] == [1, 1, 2, 1, 0, 0]  # type: ignore[arg-type]
    assert seen[1]["open"][0]["severity"] == "critical"  # type: ignore[index]
    assert seen[-1]["last"]["kind"] == "needs_review"  # type: ignore[index]


def test_an_asset_that_cannot_be_a_topic_level_is_left_out_and_counted() -> None:
    ns = Namespace(SETTINGS, "gw")
    before = metrics.REGISTRY.get_sample_value("edge_uns_skipped_total", {"reason": "asset_name"})
    assert ns.messages([rec("line/pump", "raise"), rec("pump+1", "raise")]) == []
    after = metrics.REGISTRY.get_sample_value("edge_uns_skipped_total", {"reason": "asset_name"})
    assert (after or 0) - (before or 0) == 2


def test_tracked_assets_are_bounded() -> None:
    ns = Namespace(SETTINGS.model_copy(update={"max_assets": 2}), "gw")
    ns.messages([rec("pump-1", "raise")])
    ns.messages([rec("pump-2", "raise")])
    ns.messages([rec("pump-3", "raise")])  # pump-1 forgotten
    (state,) = states(ns.messages([rec("pump-1", "needs_review", rule=None)]))
    assert state["state"] == "review"  # its open raise went with it


@pytest.mark.parametrize("bad", [{"site": ""}, {"area": "a/b"}, {"path": "{enterprise}/{plant}"}])
def test_an_incomplete_namespace_is_a_configuration_error(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="EDGE_UNS__"):
        UnsSettings.model_validate({"enterprise": "acme", "site": "north"} | bad)


START = 1_750_000_000.0


def test_a_subscriber_to_the_enterprise_sees_each_recommendation_once_and_states_retained(
    broker: Broker, tmp_path: Path
) -> None:
    env = {
        "EDGE_UNS__ENTERPRISE": "acme",
        "EDGE_UNS__SITE": "north",
        "EDGE_UNS__AREA": "pumping",
        "EDGE_UNS__LINE": "line-1",
    }
    pumps = [
        PumpStream(f"pump-{i}", seed=100 + i, start_ts=START, fault=fault)
        for i, fault in ((1, None), (2, FaultSpec("cavitation", 300.0)))
    ]
    uplink = Listener(broker, "edge-agent/gw-test/recommendations/#")
    uns = Listener(broker, "acme/#")
    agent = AgentProcess(broker, tmp_path / "state", env)
    agent.start()
    try:
        agent.wait_for_log("agent running")
        time.sleep(0.5)
        for _ in range(600):
            for pump in pumps:
                ts, values = pump.step()
                uplink.publish(
                    f"plant/{pump.asset}/telemetry", json.dumps({"ts": ts, **values}).encode()
                )
        deadline = time.monotonic() + 60
        upstream: list[tuple[str, bytes]] = []
        while time.monotonic() < deadline and not upstream:
            upstream += uplink.drain()
            time.sleep(0.2)
        assert agent.stop() == 0, agent.log_text()
        time.sleep(0.5)
        upstream += uplink.drain()
        published = uns.drain()
    finally:
        agent.kill()
        uplink.close()
        uns.close()
    assert upstream, agent.log_text()
    base = "acme/north/pumping/line-1"
    events = [json.loads(p) for t, p in published if t.endswith("/edge-agent/recommendation")]
    # Each recommendation once, the same ones as upstream, under the faulty pump's path.
    assert sorted(e["id"] for e in events) == sorted(json.loads(p)["id"] for _, p in upstream)
    assert {t for t, _ in published if t.endswith("/recommendation")} == {
        f"{base}/pump-2/edge-agent/recommendation"
    }
    # A subscriber that comes later gets the state, retained, and no event.
    late = Listener(broker, "acme/#")
    try:
        time.sleep(0.5)
        retained = late.drain()
    finally:
        late.close()
    assert [t for t, _ in retained] == [f"{base}/pump-2/edge-agent/state"]
    state = json.loads(retained[0][1])
    assert state["state"] == "alert"
    assert state["open"][0]["cause"] == "cavitation"
