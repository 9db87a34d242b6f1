"""Acceptance: the real agent reads a Sparkplug B edge node as it reads JSON, to the same advice.

One agent, both sources: four simulated pumps over JSON (`plant/pump-N/telemetry`) and the
same four pumps, the same values, from an independent Sparkplug B edge node (births, then
DDATA by alias, Ignition-style metric names that an asset profile maps to the model's
signals). Pump 3 develops a fault: the agent must advise on it, over both transports, with
the same timing, and on nothing else.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema

from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import SIGNALS, FaultSpec, PumpStream, signature_of
from tests.agent_proc import AgentProcess, Listener
from tests.sparkplug_node import DOUBLE, EdgeNode

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "rules" / "schemas" / "recommendation-v1.schema.json").read_text())
START = 1_750_000_000.0
ONSET_S = 900.0
DURATION_S = 1200.0
# What the PLC gateway calls each signal; the profile maps them back.
METRICS = {s: f"Pump/{s.capitalize()}" for s in SIGNALS}
BIRTH = [(METRICS[s], i + 1, DOUBLE) for i, s in enumerate(SIGNALS)]
PROFILE = [
    {
        "name": "sparkplug-pump",
        "match": ["sp-*"],
        "model": "shipped",
        "signals": [{"name": s, "source": METRICS[s]} for s in SIGNALS],
    }
]


def test_a_fault_over_sparkplug_is_advised_like_the_same_fault_over_json(
    broker: Broker, tmp_path: Path
) -> None:
    fault = FaultSpec("cavitation", ONSET_S)

    def pumps() -> list[PumpStream]:
        return [
            PumpStream(f"pump-{i}", seed=100 + i, start_ts=START, fault=fault if i == 3 else None)
            for i in range(1, 5)
        ]

    over_json, over_sparkplug = pumps(), pumps()
    env = {
        "EDGE_AGENT__SOURCES": '["mqtt","sparkplug"]',
        "EDGE_SPARKPLUG__GROUPS": '["plant"]',
        "EDGE_SPARKPLUG__ASSET": "sp-{device}",
        "EDGE_SPARKPLUG__QOS": "1",
        "EDGE_ASSETS__PROFILES": json.dumps(PROFILE),
    }
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    agent = AgentProcess(broker, tmp_path / "state", env)
    agent.start()
    node: EdgeNode | None = None
    try:
        agent.wait_for_log("agent running")
        # "agent running" comes once its sources' subscriptions are acknowledged
        node = EdgeNode(broker, "plant", "line-1")
        node.nbirth(int(START * 1000) - 1000)
        for pump in over_sparkplug:
            ts, values = pump.step()
            birth = {METRICS[s]: v for s, v in values.items()}
            node.dbirth(pump.asset, BIRTH, birth, int(ts * 1000))
        for pump in over_json:  # the births carried the first sample: JSON sends it too
            ts, values = pump.step()
            listener.publish(
                f"plant/{pump.asset}/telemetry", json.dumps({"ts": ts, **values}).encode()
            )
        for _ in range(int(DURATION_S) - 1):
            for a, b in zip(over_json, over_sparkplug, strict=True):
                ts, values = a.step()
                listener.publish(
                    f"plant/{a.asset}/telemetry", json.dumps({"ts": ts, **values}).encode()
                )
                ts, values = b.step()
                node.ddata(b.asset, {METRICS[s]: v for s, v in values.items()}, int(ts * 1000))
        deadline = time.monotonic() + 60
        received: list[dict[str, object]] = []
        while time.monotonic() < deadline and {"pump-3", "sp-pump-3"} - {
            str(r["asset"]) for r in received if r["kind"] == "raise"
        }:
            received += [json.loads(p) for _, p in listener.drain()]
            time.sleep(0.2)
        assert node.rebirths() == []  # nothing was missed: no rebirth was asked for
        assert agent.stop() == 0, agent.log_text()
        time.sleep(0.5)
        received += [json.loads(p) for _, p in listener.drain()]
    finally:
        if node is not None:
            node.close()
        agent.kill()
        listener.close()

    for rec in received:
        jsonschema.validate(rec, SCHEMA)
    assert {r["asset"] for r in received} == {"pump-3", "sp-pump-3"}, received
    first = {
        asset: next(r for r in received if r["asset"] == asset and r["kind"] == "raise")
        for asset in ("pump-3", "sp-pump-3")
    }
    over_j, over_s = first["pump-3"], first["sp-pump-3"]
    assert over_s["window_ts"] == over_j["window_ts"], (over_j, over_s)
    assert float(str(over_s["window_ts"])) - (START + ONSET_S) <= 60.0, over_s
    assert over_s["cause"] == over_j["cause"]
    assert over_s["cause"]["class"] == "cavitation"  # type: ignore[index]
    assert over_s["signals"][0]["signal"] == signature_of(fault)  # type: ignore[index]
    kinds = [(r["asset"], r["kind"]) for r in received]
    assert kinds.count(("sp-pump-3", "raise")) == kinds.count(("pump-3", "raise"))
