"""Jobs, the operator's side and state watchers for the update tests (real broker, real agent).

The first half drives an UpdateService in-process (StateWatcher); the second half the real
agent process (Ops builds and signs bundles with the real commands, States follows the
retained state topic through a paho Listener, `start_agent` and `metric`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import queue
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import MqttSettings
from edge_agent.daemon.bundles.build import describe_files, write_manifest
from edge_agent.daemon.bundles.bundle import read_manifest, sign
from edge_agent.daemon.bundles.cli import register
from edge_agent.daemon.bundles.manifest import MANIFEST, BundleRejectedError
from edge_agent.daemon.bundles.settings import UpdateSettings
from edge_agent.models.manifest import default_manifest_path
from edge_agent.rules.pack import default_pack_path
from edge_agent.simulator.broker import Broker
from tests.agent_proc import AgentProcess, Listener

GATEWAY = "gw-test"
JOBS = f"edge-agent/{GATEWAY}/jobs/notify"
STATES = f"edge-agent/{GATEWAY}/jobs/state"
FINAL = ("SUCCEEDED", "FAILED", "REJECTED")


def job_bytes(bundle_dir: Path, job_id: str, *, inline: bool = False) -> bytes:
    """A job for the bundle in `bundle_dir`: its files inline, or a file:// URL to them.

    A manifest the validator refuses (a path twice, a path inside a file) goes into the job
    as its bytes are on disk, as a crafted job would carry it; inline are the listed names
    that are safe and are regular files here.
    """
    raw = (bundle_dir / MANIFEST).read_bytes()
    with contextlib.suppress(BundleRejectedError):
        raw = msgspec.json.encode(read_manifest(bundle_dir))  # compact, as `publish` sends it
    listed = json.loads(raw)
    head = {"job_id": job_id, "version": listed["version"]}
    if inline:
        head["inline"] = {
            name: base64.b64encode((bundle_dir / name).read_bytes()).decode()
            for name in listed["files"]
            # an unsafe name is refused before any file is looked at
            if ".." not in name and not name.startswith("/") and (bundle_dir / name).is_file()
        }
    else:
        head["url"] = bundle_dir.resolve().as_uri()
    body = msgspec.json.encode(head)
    # The job as `bundle publish` lays it out: job_id first, the manifest's bytes as they are.
    return body[:-1] + b',"manifest":' + raw.strip() + b"}"


def update_settings(root: str, keys: Path, **extra: Any) -> UpdateSettings:
    """Update settings on topics no other test uses."""
    fields: dict[str, Any] = {
        "trusted_keys": keys,
        "gateway_topic": f"{root}/{{gateway}}/jobs/notify",
        "group_topic": f"{root}/groups/{{group}}/jobs/notify",
        "state_topic": f"{root}/{{gateway}}/jobs/state",
        "probation_s": 0.0,
    }
    return UpdateSettings(**(fields | extra))


def mqtt_client(port: int, name: str) -> MqttClient:
    """A real client of the test broker."""
    return MqttClient(MqttSettings(port=port), client_id=f"{name}-{id(object())}", name=name)


class StateWatcher:
    """Collects the job states published on one topic, in arrival order."""

    def __init__(self, client: MqttClient, topic: str) -> None:
        self.states: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client.subscribe(topic, 1, self._on_message)

    def _on_message(self, _topic: str, payload: bytes) -> None:
        self.states.put_nowait(msgspec.json.decode(payload))

    async def until_final(self, job_id: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """States of `job_id` up to and including its final one."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while True:
                state = await self.states.get()
                if state["job_id"] != job_id:
                    continue
                seen.append(state)
                if state["status"] in ("SUCCEEDED", "FAILED", "REJECTED"):
                    return seen


# --- the real agent process ---------------------------------------------------------------


def cli(*argv: str) -> int:
    """Run one `edge-agent bundle ...` command in this process; its exit code."""
    parser = argparse.ArgumentParser(prog="edge-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


class Ops:
    """The operator's side: keys, and bundles built with the real commands."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        assert cli("bundle", "keygen", "--out", str(tmp / "ops")) == 0
        self.keys = tmp / "ops.pub"
        key = load_pem_private_key((tmp / "ops.key").read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key

    def bundle(
        self, version: int, *, model_version: str = "1.0.0", pack_version: str = "1.0.0"
    ) -> Path:
        """Build and sign a bundle of the shipped model and pack, renamed to these versions."""
        src = self.tmp / f"src{version}"
        shutil.copytree(default_manifest_path().parent, src / "model")
        manifest = json.loads((src / "model" / "manifest.json").read_text())
        manifest["version"] = model_version
        (src / "model" / "manifest.json").write_text(json.dumps(manifest))
        pack = re.sub(
            r"^version: .*$",
            f"version: {pack_version}",
            default_pack_path().read_text(),
            count=1,
            flags=re.MULTILINE,
        )
        (src / "pump.yaml").write_text(pack)
        out = self.tmp / f"b{version}"
        model = str(src / "model" / "manifest.json")
        assert cli("bundle", "build", "--model", model, "--rules", str(src / "pump.yaml"),
                   "--version", str(version), "--out", str(out)) == 0  # fmt: skip
        assert cli("bundle", "sign", str(out), "--key", str(self.tmp / "ops.key")) == 0
        return out

    def resign(
        self, bundle_dir: Path, key: Ed25519PrivateKey | None = None, **changes: Any
    ) -> None:
        """Re-describe the files (after an edit) and sign again, with optional manifest changes."""
        manifest = read_manifest(bundle_dir)
        changes.setdefault("files", describe_files(bundle_dir))
        manifest = msgspec.structs.replace(manifest, **changes)
        write_manifest(bundle_dir, sign(manifest, key or self.key))

    def replace_artifact(self, bundle_dir: Path, file: str, data: bytes) -> None:
        """Put `data` in place of model artifact `file`, its hashes updated everywhere, signed:
        an authentic release whose model file is broken."""
        (bundle_dir / "model" / file).write_bytes(data)
        model = bundle_dir / "model" / "manifest.json"
        manifest = json.loads(model.read_text())
        for art in manifest["artifacts"]:
            if art["file"] == file:
                art["sha256"] = hashlib.sha256(data).hexdigest()
                art["bytes"] = len(data)
        model.write_text(json.dumps(manifest, indent=2))
        self.resign(bundle_dir)


class States:
    """The gateway's job states, in the order they arrive."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.seen: list[dict[str, Any]] = []
        self.others: list[tuple[str, bytes]] = []  # messages on other topics, kept

    def recommendations(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Recommendations received so far, waiting up to `timeout_s` for the first."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.others += self.listener.drain()
            recs = [json.loads(p) for t, p in self.others if "/recommendations/" in t]
            if recs or time.monotonic() > deadline:
                return recs
            time.sleep(0.2)

    def poll(self, job_id: str, wait_s: float = 0.0) -> dict[str, Any] | None:
        """The next state of `job_id` that has arrived (waiting up to `wait_s`), else None."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                topic, payload = self.listener.messages.get(
                    timeout=max(deadline - time.monotonic(), 0.001)
                )
            except queue.Empty:
                return None
            if topic != STATES:
                self.others.append((topic, payload))
                continue
            state = json.loads(payload)
            self.seen.append(state)
            if state["job_id"] == job_id:
                return dict(state)

    def until(self, job_id: str, pred: Any = None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """States of `job_id` until `pred(state)` (default: a final state)."""
        pred = pred or (lambda s: s["status"] in FINAL)
        deadline = time.monotonic() + timeout_s
        mine: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            state = self.poll(job_id, 0.2)
            if state is None:
                continue
            mine.append(state)
            if pred(state):
                return mine
        raise AssertionError(f"no final state for {job_id}; saw {self.seen[-10:]}")


def start_agent(broker: Broker, state: Path, env: dict[str, str]) -> AgentProcess:
    """Start the real agent and wait until it runs and has subscribed."""
    agent = AgentProcess(broker, state, env)
    agent.start()
    agent.wait_for_log("agent running")
    time.sleep(0.5)  # the agent's SUBACKs
    return agent


def metric(env: dict[str, str], name: str) -> float:
    """Sum of the samples of `name` (a prefix, labels included) on the agent's /metrics."""
    url = f"http://127.0.0.1:{env['EDGE_SERVICE__HTTP_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
