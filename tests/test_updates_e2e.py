"""Fleet updates against the real agent process and a real mosquitto (issue 9, acceptance 1-5)."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.build import write_manifest
from edge_agent.daemon.bundles.bundle import read_manifest, sign
from edge_agent.daemon.bundles.store import active_bundle
from edge_agent.simulator.broker import Broker, free_port
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import Listener
from tests.bundle_server import RangeFiles, serving
from tests.update_kit import (
    GATEWAY,
    JOBS,
    STATES,
    Ops,
    States,
    job_bytes,
    metric,
    start_agent,
)

START = 1_750_000_000.0


@pytest.fixture
def ops(tmp_path: Path) -> Ops:
    return Ops(tmp_path)


@pytest.fixture
def agent_env(ops: Ops) -> dict[str, str]:
    return {
        "EDGE_UPDATES__TRUSTED_KEYS": str(ops.keys),
        "EDGE_UPDATES__PROBATION_S": "1",
        "EDGE_SERVICE__HTTP_PORT": str(free_port()),
    }


@pytest.fixture
def listener(broker: Broker) -> Iterator[Listener]:
    lis = Listener(broker, STATES, f"edge-agent/{GATEWAY}/recommendations/#")
    yield lis
    lis.close()


def test_live_update_carries_new_versions_installs_once(
    broker: Broker, tmp_path: Path, ops: Ops, agent_env: dict[str, str], listener: Listener
) -> None:
    """Acceptance 1 and 5."""
    bundle = ops.bundle(2, model_version="1.0.1", pack_version="1.0.1")
    fault = FaultSpec("overheating", 600.0)
    pumps = [PumpStream(f"pump-{i}", seed=10 + i, start_ts=START, fault=fault if i == 2 else None)
             for i in (1, 2)]  # fmt: skip
    agent = start_agent(broker, tmp_path / "state", agent_env)
    states = States(listener)
    sent = 0
    try:
        for second in range(1200):
            if second == 300:  # mid-stream, the update arrives
                listener.publish(JOBS, job_bytes(bundle, "job-2", inline=True))
                flow = states.until("job-2")
            for pump in pumps:
                ts, values = pump.step()
                listener.publish(
                    f"plant/{pump.asset}/telemetry", json.dumps({"ts": ts, **values}).encode()
                )
                sent += len(values)  # one reading per signal
        listener.publish(JOBS, job_bytes(bundle, "job-2", inline=True))  # delivered again
        again = states.until("job-2")
        recs = states.recommendations()
        readings = metric(agent_env, "edge_readings_total")
        dropped = metric(agent_env, "edge_readings_dropped_total")
        windows_dropped = metric(agent_env, 'edge_windows_total{outcome="dropped"}')
        assert agent.proc is not None
        assert agent.proc.poll() is None  # no restart: the same process served throughout
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.kill()
    assert [f"{s['status']}:{s.get('step', '')}" for s in flow] == [
        "QUEUED:", "IN_PROGRESS:downloading", "IN_PROGRESS:verifying",
        "IN_PROGRESS:staging", "IN_PROGRESS:probation", "SUCCEEDED:",
    ]  # fmt: skip
    assert [s["status"] for s in again] == ["SUCCEEDED"]  # installed once
    assert readings == sent  # every reading arrived, across the swap
    assert dropped == 0
    assert windows_dropped == 0
    assert recs, "the fault after the update produced no recommendation"
    for rec in recs:
        assert rec["model"]["version"] == "1.0.1", rec
        assert rec["rule_pack"]["version"] == "1.0.1", rec


def _rejection_cases(tmp_path: Path, ops: Ops, good: Path) -> dict[str, Path]:
    """One signed-or-not bundle per rejection reason, each otherwise like `good`."""
    cases: dict[str, Path] = {}

    def variant(name: str, version: int) -> Path:
        path = tmp_path / f"case-{name}"
        shutil.copytree(good, path)
        manifest = read_manifest(path)
        write_manifest(path, sign(msgspec.structs.replace(manifest, version=version), ops.key))
        cases[name] = path
        return path

    m = read_manifest(variant("bad_signature", 6))
    write_manifest(cases["bad_signature"], msgspec.structs.replace(m, version=7))
    ops.resign(variant("untrusted_key", 6), Ed25519PrivateKey.generate())
    ops.resign(variant("expired", 6), expires=datetime.now(UTC) - timedelta(minutes=1))
    ops.resign(
        variant("agent_too_old", 6), compat=msgspec.structs.replace(m.compat, min_agent="99.0.0")
    )
    schema = {**m.compat.model_input, "window": 999}
    ops.resign(
        variant("input_schema", 6), compat=msgspec.structs.replace(m.compat, model_input=schema)
    )
    ops.resign(variant("unsafe_path", 6), rules=["../../etc/passwd"],
               files={**m.files, "../../etc/passwd": m.files[m.rules[0]]})  # fmt: skip
    variant("hash_mismatch", 6)
    variant("extra_file", 8)
    return cases


def test_rejections_leave_the_running_bundle_serving(
    broker: Broker, tmp_path: Path, ops: Ops, agent_env: dict[str, str], listener: Listener
) -> None:
    """Acceptance 2, each case through the real agent."""
    good = ops.bundle(5)
    cases = _rejection_cases(tmp_path, ops, good)
    extra_dir = cases.pop("extra_file")
    agent = start_agent(broker, tmp_path / "state", agent_env)
    states = States(listener)
    try:
        listener.publish(JOBS, job_bytes(good, "job-5", inline=True))
        assert states.until("job-5")[-1]["status"] == "SUCCEEDED"
        results: dict[str, dict[str, Any]] = {}
        for name, path in cases.items():
            payload = job_bytes(path, f"job-{name}", inline=name != "hash_mismatch")
            if name == "hash_mismatch":  # the served file changes after the manifest was made
                (path / "golden.json").write_bytes(b" " + (path / "golden.json").read_bytes()[1:])
            listener.publish(JOBS, payload)
            results[name] = states.until(f"job-{name}")[-1]
        # The same version again, as a new job: not above 5.
        listener.publish(JOBS, job_bytes(good, "job-again-5", inline=True))
        results["old_version"] = states.until("job-again-5")[-1]
        extra = json.loads(job_bytes(extra_dir, "job-extra_file", inline=True))
        extra["inline"]["rules/evil.yaml"] = base64.b64encode(b"pack: evil\n").decode()
        listener.publish(JOBS, json.dumps(extra).encode())
        results["extra_file"] = states.until("job-extra_file")[-1]
        agent.stop(signal.SIGTERM)
        # After a restart, the highest accepted version still holds.
        agent = start_agent(broker, tmp_path / "state", agent_env)
        listener.publish(JOBS, job_bytes(good, "job-after-restart", inline=True))
        results["old_version_after_restart"] = states.until("job-after-restart")[-1]
        assert agent.proc is not None
        assert agent.proc.poll() is None
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.kill()
    for name, state in results.items():
        assert state["status"] == "REJECTED", (name, state)
        assert state["reason"].startswith(name.removesuffix("_after_restart")), (name, state)
        assert state["active_version"] == 5, (name, state)
    current = active_bundle(tmp_path / "state")
    assert current is not None
    assert current.version == 5


def test_golden_failure_rolls_back(
    broker: Broker, tmp_path: Path, ops: Ops, agent_env: dict[str, str], listener: Listener
) -> None:
    """Acceptance 3: a model that misses its golden output is rolled back, reported FAILED."""
    good = ops.bundle(2)
    bad = ops.bundle(3)
    pair = json.loads((bad / "golden.json").read_text())
    own = pair["artifacts"]["pump-fault.int8.tflite"]  # one artifact of four misses its output
    own["score"] = [s + 10.0 for s in own["score"]]
    (bad / "golden.json").write_text(json.dumps(pair))
    ops.resign(bad)
    agent = start_agent(broker, tmp_path / "state", agent_env)
    states = States(listener)
    try:
        listener.publish(JOBS, job_bytes(good, "job-2", inline=True))
        states.until("job-2")
        listener.publish(JOBS, job_bytes(bad, "job-3", inline=True))
        final = states.until("job-3")[-1]
        assert agent.proc is not None
        assert agent.proc.poll() is None
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.kill()
    assert final["status"] == "FAILED"
    assert final["reason"].startswith("probation: model/pump-fault.int8.tflite: golden check")
    assert final["active_version"] == 2


class _Slow(RangeFiles):
    """Sends slowly, so a download can be interrupted part-way."""

    def send_body(self, body: bytes) -> None:
        try:
            for at in range(0, len(body), 4096):
                self.wfile.write(body[at : at + 4096])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            return  # the agent was killed mid-file


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[str, type[_Slow]]]:
    with serving(_Slow, tmp_path) as served:
        yield served


def _until_partial(incoming: Path, bundle_dir: Path, timeout_s: float = 30.0) -> None:
    """Wait until some file of the bundle is part-way downloaded."""
    lengths = {n: e.length for n, e in read_manifest(bundle_dir).files.items()}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, length in lengths.items():
            path = incoming / name
            if path.exists() and 0 < path.stat().st_size < length:
                return
        time.sleep(0.02)
    raise AssertionError("no partial download seen")


@pytest.mark.parametrize("step", ["downloading", "probation"])
def test_sigkill_during_a_step(
    broker: Broker,
    tmp_path: Path,
    ops: Ops,
    agent_env: dict[str, str],
    listener: Listener,
    slow_server: tuple[str, type[_Slow]],
    step: str,
) -> None:
    """Acceptance 4 on the real process: killed while downloading (the download resumes with
    a Range after the restart and the job succeeds) or in probation (rolled back, FAILED).
    Every durable step in between is killed in turn in test_updates_crash.py."""
    old, new = ops.bundle(2), ops.bundle(3)
    url, handler = slow_server
    # A probation long enough to be killed in; the download step keeps agent_env's 1 s.
    env = agent_env | {"EDGE_UPDATES__PROBATION_S": "5"} if step == "probation" else agent_env
    agent = start_agent(broker, tmp_path / "state", env)
    states = States(listener)
    try:
        listener.publish(JOBS, job_bytes(old, "job-2", inline=True))
        states.until("job-2")
        payload = json.loads(job_bytes(new, "job-3", inline=False))
        payload["url"] = f"{url}/{new.name}"
        retained = json.dumps(payload).encode()
        listener.client.publish(JOBS, retained, qos=1, retain=True).wait_for_publish(10)
        states.until("job-3", lambda s: s.get("step") == step)
        if step == "downloading":
            _until_partial(tmp_path / "state" / "bundles" / "incoming" / "job-3", new)
        agent.stop(signal.SIGKILL)
        killed_at = active_bundle(tmp_path / "state")
        assert killed_at is not None
        assert killed_at.version in (2, 3)
        agent = start_agent(broker, tmp_path / "state", env)
        final = states.until("job-3")[-1]
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.kill()
    current = active_bundle(tmp_path / "state")
    assert current is not None
    if step == "probation":
        assert final["status"] == "FAILED"
        assert "restarted" in final["reason"]
        assert current.version == 2
    else:
        assert final["status"] == "SUCCEEDED", final
        assert current.version == 3
        assert handler.ranges, "the interrupted download started over instead of resuming"
