"""End to end, for real: mosquitto, the agent as a subprocess, simulated pumps over paho."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import SIGNALS, FaultSpec, PumpStream, signature_of, simulate
from tests.agent_proc import AgentProcess, Listener


def agent_backend(agent: AgentProcess) -> str:
    """The backend the agent said it scored with."""
    return str(agent.wait_for_log("model loaded", timeout_s=1)["backend"])


ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "rules" / "schemas" / "recommendation-v1.schema.json").read_text())
START = 1_750_000_000.0
ONSET_S = 900.0
DURATION_S = 1200.0


@pytest.mark.parametrize(
    ("kind", "env"),
    [
        # ONNX named: the default (auto) puts LiteRT first on a box without an NVIDIA GPU.
        ("cavitation", {"EDGE_MODEL__BACKENDS": '["onnx"]'}),
        # The same flow on LiteRT with the int8 model: the runtime Coral-class gateways use.
        ("overheating", {"EDGE_MODEL__BACKENDS": '["litert"]', "EDGE_MODEL__PRECISION": "int8"}),
    ],
    ids=["cavitation-onnx-fp32", "overheating-litert-int8"],
)
def test_fault_on_one_pump_is_recommended_and_healthy_pumps_stay_quiet(
    broker: Broker, tmp_path: Path, kind: str, env: dict[str, str]
) -> None:
    fault = FaultSpec(kind, ONSET_S)
    pumps = [
        PumpStream(f"pump-{i}", seed=100 + i, start_ts=START, fault=fault if i == 3 else None)
        for i in range(1, 5)
    ]
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    agent = AgentProcess(broker, tmp_path / "state", env)
    agent.start()
    try:
        agent.wait_for_log("agent running")
        # "agent running" comes once its sources' subscriptions are acknowledged
        for _ in range(int(DURATION_S)):
            for pump in pumps:
                ts, values = pump.step()
                body = json.dumps({"ts": ts, **values}).encode()
                listener.publish(f"plant/{pump.asset}/telemetry", body)
        deadline = time.monotonic() + 60
        received: list[dict[str, object]] = []
        while time.monotonic() < deadline and not any(r["asset"] == "pump-3" for r in received):
            received += [json.loads(p) for _, p in listener.drain()]
            time.sleep(0.2)
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
        time.sleep(0.5)
        received += [json.loads(p) for _, p in listener.drain()]
    finally:
        agent.kill()
        listener.close()

    for rec in received:
        jsonschema.validate(rec, SCHEMA)
    assert {r["asset"] for r in received} == {"pump-3"}, received
    first = next(r for r in received if r["kind"] == "raise")
    assert float(str(first["window_ts"])) - (START + ONSET_S) <= 60.0, first
    leading = first["signals"][0]["signal"]  # type: ignore[index]
    assert leading == signature_of(fault), first
    assert first["cause"]["class"] == kind, first  # type: ignore[index]
    about = [x for x in agent.lines if re.search(r"recommend|reading|raise", str(x.get("event")))]
    assert about, agent.log_text()
    assert all(x.get("asset") for x in about), about  # every such log line names its asset
    backend = agent_backend(agent)
    expected = "litert" if "litert" in env["EDGE_MODEL__BACKENDS"] else "onnx"
    assert backend.startswith(expected), backend


def test_an_anomaly_the_model_cannot_name_is_escalated_for_review(
    broker: Broker, tmp_path: Path
) -> None:
    """The cascade's third tier: no guessed cause, the evidence to the review topic."""
    trace = simulate("pump-9", 33_077, 3600.0, start_ts=START)
    values = trace.values.copy()
    t = np.arange(values.shape[0] - 1800, dtype=np.float64)
    values[1800:, 2] *= 1.0 + 0.3 * np.sin(2.0 * np.pi * t / 10.0)  # current pulsating
    listener = Listener(broker, "edge-agent/gw-test/#")
    agent = AgentProcess(broker, tmp_path / "state")
    agent.start()
    try:
        agent.wait_for_log("agent running")
        for ts, row in zip(trace.ts.tolist(), values.tolist(), strict=True):
            body = json.dumps({"ts": ts, **dict(zip(SIGNALS, row, strict=True))}).encode()
            listener.publish("plant/pump-9/telemetry", body)
        deadline = time.monotonic() + 30
        got: list[tuple[str, bytes]] = []
        while time.monotonic() < deadline and not any("/needs_review/" in t for t, _ in got):
            got += listener.drain()
            time.sleep(0.2)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()
    reviews = [json.loads(p) for t, p in got if t == "edge-agent/gw-test/needs_review/pump-9"]
    assert reviews, [t for t, _ in got]
    assert not [t for t, _ in got if "/recommendations/" in t]
    review = reviews[0]
    jsonschema.validate(review, SCHEMA)
    assert review["kind"] == "needs_review"
    assert review["cause"] is None
    assert review["signals"][0]["signal"] == "current"
