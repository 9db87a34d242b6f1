"""Jobs and a state-topic watcher for the update tests (real broker, real MqttClient)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import msgspec

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.connectors.settings import MqttSettings
from edge_agent.daemon.bundles.bundle import MANIFEST, read_manifest
from edge_agent.daemon.bundles.fetch import Job
from edge_agent.daemon.bundles.settings import UpdateSettings


def job_bytes(bundle_dir: Path, job_id: str, *, inline: bool = False) -> bytes:
    """A job for the bundle in `bundle_dir`: its files inline, or a file:// URL to them."""
    manifest = read_manifest(bundle_dir)
    if inline:
        files = {
            name: base64.b64encode((bundle_dir / name).read_bytes()).decode()
            for name in manifest.files
            if ".." not in name  # an unsafe name is refused before any file is looked at
        }
        job = Job(job_id=job_id, version=manifest.version, manifest=manifest, inline=files)
    else:
        job = Job(
            job_id=job_id,
            version=manifest.version,
            manifest=manifest,
            url=bundle_dir.resolve().as_uri(),
        )
    assert (bundle_dir / MANIFEST).exists()
    return msgspec.json.encode(job)


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
