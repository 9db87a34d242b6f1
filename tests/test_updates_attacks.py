"""Issue 18: authentic but broken releases and crafted jobs, against the running agent.

One real agent (real mosquitto, real ONNX Runtime and LiteRT) runs bundle 2; each numbered
case of the issue sends its job while pump readings stream in, and must end in a reported
REJECTED or FAILED state whose reason names the file at fault, with the agent still up,
every reading sent received, and bundle 2 still serving. Where the case is a bundle
directory, `edge-agent bundle verify` is run on it too and must say the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_agent.daemon.bundles.build import describe_files
from edge_agent.daemon.bundles.bundle import read_manifest, sign
from edge_agent.daemon.bundles.manifest import FileEntry, encode_manifest
from edge_agent.daemon.bundles.store import active_bundle
from edge_agent.simulator.broker import Broker, free_port, running_broker
from edge_agent.simulator.plant import PumpStream
from tests.agent_proc import AgentProcess, Listener
from tests.update_kit import FINAL, JOBS, STATES, Ops, States, job_bytes, metric, start_agent

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS = 2  # the bundle serving when each case arrives
GARBAGE = b"\x08\x07 not a model " * 64


@dataclass
class Rig:
    """The running agent, its operator and the readings sent to it."""

    broker: Broker
    ops: Ops
    env: dict[str, str]
    state: Path
    agent: AgentProcess
    listener: Listener
    states: States
    tmp: Path
    pump: PumpStream = field(default_factory=lambda: PumpStream("pump-1", 7, 1_750_000_000.0))
    version: int = PREVIOUS

    def next_bundle(self) -> Path:
        """A fresh, valid, signed bundle above every version sent so far."""
        self.version += 1
        return self.ops.bundle(self.version)

    def send_reading(self) -> int:
        ts, values = self.pump.step()
        payload = json.dumps({"ts": ts, **values}).encode()
        self.listener.publish(f"plant/{self.pump.asset}/telemetry", payload)
        return len(values)

    def run_job(self, payload: bytes, job_id: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """Send the job while readings stream; check the agent lived through it; its final state."""
        received_before = metric(self.env, "edge_readings_total")
        dropped_before = metric(self.env, "edge_readings_dropped_total")
        sent = 0
        self.listener.publish(JOBS, payload)
        final: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout_s
        while final is None:
            assert time.monotonic() < deadline, f"no final state for {job_id}: {self.agent_log()}"
            assert self.agent.proc is not None
            assert self.agent.proc.poll() is None, f"the agent died: {self.agent_log()}"
            sent += self.send_reading()
            state = self.states.poll(job_id, 0.02)
            if state is not None and state["status"] in FINAL:
                final = state
        for _ in range(20):  # and it still takes readings afterwards
            sent += self.send_reading()
        received = 0.0
        until = time.monotonic() + 30
        while time.monotonic() < until:
            received = metric(self.env, "edge_readings_total") - received_before
            if received >= sent:
                break
            time.sleep(0.1)
        assert self.agent.proc is not None
        assert self.agent.proc.poll() is None, f"the agent died: {self.agent_log()}"
        assert received == sent
        assert metric(self.env, "edge_readings_dropped_total") == dropped_before
        assert final["active_version"] == PREVIOUS, final
        current = active_bundle(self.state)
        assert current is not None
        assert current.version == PREVIOUS
        return final

    def agent_log(self) -> str:
        return self.agent.log_text()[-4000:]

    def verify(self, bundle_dir: Path) -> str:
        """`edge-agent bundle verify` as the operator runs it: its one-line verdict."""
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent.daemon.cli", "bundle", "verify", str(bundle_dir),
             "--trusted-keys", str(self.ops.keys), "--highest", str(PREVIOUS)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        verdict = [ln for ln in proc.stderr.splitlines() if ln.startswith(("REJECTED", "FAILED"))]
        assert proc.returncode == 1, (proc.stdout, proc.stderr[-2000:])
        assert len(verdict) == 1, proc.stderr[-2000:]
        return verdict[0]


def _agree(verdict: str, final: dict[str, Any], named: str) -> None:
    """`bundle verify` and the agent: the same state, the same reason code, the same file."""
    status, rest = verdict.split(" ", 1)
    reason = rest.split(": ", 1)[1]  # after the directory
    assert status == final["status"], (verdict, final)
    assert reason.split(":")[0] == final["reason"].split(":")[0], (verdict, final)
    assert named in reason, verdict
    assert named in final["reason"], final


@contextmanager
def _running(tmp: Path, **env: str) -> Iterator[Rig]:
    with running_broker() as broker:
        ops = Ops(tmp)
        agent_env = {
            "EDGE_UPDATES__TRUSTED_KEYS": str(ops.keys),
            "EDGE_UPDATES__PROBATION_S": "1",
            "EDGE_SERVICE__HTTP_PORT": str(free_port()),
            **env,
        }
        agent = start_agent(broker, tmp / "state", agent_env)
        listener = Listener(broker, STATES)
        try:
            rig = Rig(broker, ops, agent_env, tmp / "state", agent, listener, States(listener), tmp)
            good = ops.bundle(PREVIOUS)
            listener.publish(JOBS, job_bytes(good, f"job-{PREVIOUS}", inline=True))
            assert rig.states.until(f"job-{PREVIOUS}")[-1]["status"] == "SUCCEEDED"
            yield rig
            assert agent.stop() == 0, agent.log_text()
        finally:
            listener.close()
            agent.kill()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with _running(tmp_path_factory.mktemp("attacks")) as running:
        yield running


def test_probation_runs_each_shipped_artifact(rig: Rig) -> None:
    """Acceptance 2: installing bundle 2 proved all four artifacts on their runtimes."""
    proven = {
        line["file"]: (line["backend"], line["outcome"])
        for line in rig.agent.lines
        if line.get("event") == "bundle_probation_artifact"
    }
    assert proven == {
        "model/pump-fault.fp32.onnx": ("onnx", "ok"),
        "model/pump-fault.int8.onnx": ("onnx", "ok"),
        "model/pump-fault.fp32.tflite": ("litert", "ok"),
        "model/pump-fault.int8.tflite": ("litert", "ok"),
    }


def test_1_garbage_onnx_fails_the_bundle_not_the_agent(rig: Rig) -> None:
    bad = rig.next_bundle()
    rig.ops.replace_artifact(bad, "pump-fault.fp32.onnx", GARBAGE)
    final = rig.run_job(job_bytes(bad, "case-1", inline=True), "case-1")
    assert final["status"] == "FAILED"
    assert final["reason"].startswith("probation: model/pump-fault.fp32.onnx: does not load"), final
    _agree(rig.verify(bad), final, "model/pump-fault.fp32.onnx")


def test_1_garbage_onnx_on_an_agent_configured_for_litert(tmp_path: Path) -> None:
    with _running(tmp_path, EDGE_MODEL__BACKENDS='["litert"]') as lite:
        bad = lite.next_bundle()
        lite.ops.replace_artifact(bad, "pump-fault.fp32.onnx", GARBAGE)
        final = lite.run_job(job_bytes(bad, "case-1-litert", inline=True), "case-1-litert")
        assert final["status"] == "FAILED"
        assert "model/pump-fault.fp32.onnx" in final["reason"]
        assert "litert:cpu" in json.dumps(lite.agent.lines)  # it really ran on LiteRT


def test_2_garbage_tflite_is_not_installed(rig: Rig) -> None:
    """One bad artifact among four (the int8 TFLite fallback) rejects the whole bundle."""
    bad = rig.next_bundle()
    rig.ops.replace_artifact(bad, "pump-fault.int8.tflite", GARBAGE)
    final = rig.run_job(job_bytes(bad, "case-2", inline=True), "case-2")
    assert final["status"] == "FAILED"
    assert final["reason"].startswith("probation: model/pump-fault.int8.tflite: does not load")
    _agree(rig.verify(bad), final, "model/pump-fault.int8.tflite")


def test_3_symlink_in_a_file_source_is_rejected(rig: Rig) -> None:
    bad = rig.next_bundle()
    pack = bad / "rules" / "pump.yaml"
    outside = rig.tmp / "outside.yaml"
    outside.write_bytes(pack.read_bytes())  # the same bytes: only the link is at fault
    pack.unlink()
    pack.symlink_to(outside)
    final = rig.run_job(job_bytes(bad, "case-3"), "case-3")  # url: file://<bundle dir>
    assert final["status"] == "REJECTED"
    assert final["reason"].startswith("unsafe_path: rules/pump.yaml"), final
    _agree(rig.verify(bad), final, "rules/pump.yaml")


def test_4_a_file_listed_twice_is_rejected(rig: Rig) -> None:
    bad = rig.next_bundle()
    twice = "model/pump-fault.fp32.tflite"
    # Signed as decoders see it (the last entry wins); a first entry for the same path says
    # other bytes. Which one did the release engineer mean? Neither is installed.
    text = encode_manifest(read_manifest(bad)).decode()
    first = json.dumps({"length": len(GARBAGE), "sha256": hashlib.sha256(GARBAGE).hexdigest()})
    text = text.replace('"files": {', f'"files": {{\n    "{twice}": {first},', 1)
    (bad / "manifest.json").write_text(text)
    final = rig.run_job(job_bytes(bad, "case-4", inline=True), "case-4")
    assert final["status"] == "REJECTED"
    assert final["reason"].startswith("malformed:"), final
    assert "listed twice" in final["reason"]
    _agree(rig.verify(bad), final, twice)


def test_5_job_id_with_traversal_is_reported_under_a_safe_reference(rig: Rig) -> None:
    job_id = "../../bundles/current"
    ref = f"unsafe-{hashlib.sha256(job_id.encode()).hexdigest()[:16]}"
    bundle = rig.next_bundle()
    final = rig.run_job(job_bytes(bundle, job_id, inline=True), ref, timeout_s=30)
    assert final["status"] == "REJECTED"
    assert final["reason"].startswith("malformed: job id '../../bundles/current' is not a safe")
    assert not (rig.state / "bundles" / "jobs" / f"{job_id}.json").exists()


def test_5_oversize_inline_job_gets_a_too_large_state(rig: Rig) -> None:
    bundle = rig.next_bundle()
    (bundle / "model" / "weights.bin").write_bytes(os.urandom(13_500_000))  # 18 MB in base64
    rig.ops.resign(bundle)
    payload = job_bytes(bundle, "case-5-big", inline=True)
    assert len(payload) > 16 << 20  # above EDGE_UPDATES__MAX_JOB_BYTES
    final = rig.run_job(payload, "case-5-big", timeout_s=30)
    assert final["status"] == "REJECTED"
    assert final["reason"].startswith("too_large: job message of"), final


def test_6_overlapping_paths_are_malformed(rig: Rig) -> None:
    bad = rig.next_bundle()
    inner = "model/manifest.json/inner.bin"
    data = b"inner"
    files = {
        **describe_files(bad),
        inner: FileEntry(sha256=hashlib.sha256(data).hexdigest(), length=len(data)),
    }
    manifest = sign(msgspec.structs.replace(read_manifest(bad), files=files), rig.ops.key)
    (bad / "manifest.json").write_bytes(encode_manifest(manifest))
    final = rig.run_job(job_bytes(bad, "case-6", inline=True), "case-6")
    assert final["status"] == "REJECTED"
    assert final["reason"].startswith("malformed:"), final
    assert inner in final["reason"]
    _agree(rig.verify(bad), final, "model/manifest.json")
