"""The job protocol against a real mosquitto: states in order, install, reject, roll back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.connectors.mqtt import MqttClient
from edge_agent.core import metrics
from edge_agent.core.errors import ModelError
from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.bundles.bundle import Bundle
from edge_agent.daemon.bundles.jobs import job_ref
from edge_agent.daemon.bundles.probation import check_rules
from edge_agent.daemon.bundles.store import BundleStore, active_bundle
from edge_agent.daemon.bundles.updates import UpdateService
from edge_agent.simulator.broker import Broker
from tests.bundle_kit import MODEL_INPUT, make_bundle, resign, write_keys
from tests.update_kit import StateWatcher, job_bytes, mqtt_client, update_settings

GATEWAY = "gw1"
STEPS = ["downloading", "verifying", "staging", "probation"]


@dataclass
class Agent:
    """The pieces of an agent an update touches: what it activates, in order."""

    activated: list[int | None] = field(default_factory=list)
    fail_on: set[int] = field(default_factory=set)
    scoring_errors_on: set[int] = field(default_factory=set)

    async def activate(self, bundle: Bundle | None) -> None:
        version = None if bundle is None else bundle.version
        self.activated.append(version)
        if version in self.fail_on:
            raise ModelError(f"bundle {version}: model does not load")
        if version in self.scoring_errors_on:
            metrics.SCORING_ERRORS.inc()


@dataclass
class Rig:
    service: UpdateService
    agent: Agent
    operator: MqttClient
    watcher: StateWatcher
    state: Path
    key: Ed25519PrivateKey
    root: str
    tmp: Path

    async def send(self, payload: bytes, topic: str | None = None) -> None:
        topic = topic or f"{self.root}/{GATEWAY}/jobs/notify"
        # Retained, as `bundle publish` sends jobs: a subscription that lands late still gets it.
        await self.operator.publish(Outgoing(topic, payload, new_id(), retain=True))

    def bundle(self, name: str, version: int, **kw: object) -> Path:
        path = self.tmp / name
        make_bundle(path, self.key, version, tag=name, **kw)  # type: ignore[arg-type]
        return path


@pytest.fixture
async def rig(broker: Broker, topic_root: str, tmp_path: Path) -> AsyncIterator[Rig]:
    key = Ed25519PrivateKey.generate()
    keys = write_keys(tmp_path / "trusted.keys", key)
    agent = Agent()
    settings = update_settings(topic_root, keys, groups=["pumps"], probation_s=0.3)
    state = tmp_path / "state"
    async with (
        mqtt_client(broker.port, "agent") as client,
        mqtt_client(broker.port, "operator") as operator,
    ):
        service = UpdateService(
            settings,
            client,
            state,
            GATEWAY,
            agent.activate,
            model_input=MODEL_INPUT,
            check=check_rules,
        )
        watcher = StateWatcher(operator, service.state_topic)
        await operator.connected.wait()
        task = asyncio.create_task(service.run(), name="updates")
        await client.connected.wait()
        await service.subscribed.wait()
        try:
            yield Rig(service, agent, operator, watcher, state, key, topic_root, tmp_path)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _flow(states: list[dict[str, object]]) -> list[str]:
    return [f"{s['status']}:{s.get('step', '')}" for s in states]


SUCCESS_FLOW = ["QUEUED:", *[f"IN_PROGRESS:{s}" for s in STEPS], "SUCCEEDED:"]


async def test_valid_bundle_by_url_installs_and_reports_in_order(rig: Rig) -> None:
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    states = await rig.watcher.until_final("job-2")
    assert _flow(states) == SUCCESS_FLOW
    seqs = [int(str(s["seq"])) for s in states]
    assert seqs == sorted(set(seqs))
    assert states[-1]["active_version"] == 2
    assert rig.agent.activated == [2]
    current = active_bundle(rig.state)
    assert current is not None
    assert current.version == 2


async def test_inline_job_on_the_group_topic(rig: Rig) -> None:
    await rig.send(
        job_bytes(rig.bundle("b3", 3), "bundle-3.0", inline=True),
        topic=f"{rig.root}/groups/pumps/jobs/notify",
    )
    states = await rig.watcher.until_final("bundle-3.0")
    assert _flow(states) == SUCCESS_FLOW
    assert rig.agent.activated == [3]


async def test_same_job_twice_installs_once(rig: Rig) -> None:
    payload = job_bytes(rig.bundle("b2", 2), "job-2")
    await rig.send(payload)
    first = await rig.watcher.until_final("job-2")
    await rig.send(payload)
    second = await rig.watcher.until_final("job-2")
    assert _flow(first) == SUCCESS_FLOW
    assert _flow(second) == ["SUCCEEDED:"]  # the stored final state, not a second install
    assert rig.agent.activated == [2]


async def test_bad_signature_is_rejected_and_nothing_changes(rig: Rig) -> None:
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    await rig.watcher.until_final("job-2")
    bad = rig.bundle("b3", 3)
    payload = job_bytes(bad, "job-3").replace(b'"version":3', b'"version":4', 1)
    payload = payload.replace(b'"version":3', b'"version":4', 1)  # the manifest's, unsigned
    await rig.send(payload)
    states = await rig.watcher.until_final("job-3")
    assert _flow(states) == ["QUEUED:", "REJECTED:"]
    assert str(states[-1]["reason"]).startswith("bad_signature")
    assert states[-1]["active_version"] == 2
    assert rig.agent.activated == [2]


async def test_old_version_rejected_after_restart(rig: Rig) -> None:
    await rig.send(job_bytes(rig.bundle("b5", 5), "job-5"))
    await rig.watcher.until_final("job-5")
    # A fresh store over the same directory is what a restarted agent sees.
    assert BundleStore(rig.state).highest == 5
    await rig.send(job_bytes(rig.bundle("b4", 4), "job-4"))
    states = await rig.watcher.until_final("job-4")
    assert str(states[-1]["reason"]).startswith("old_version")


async def test_tampered_source_file_is_rejected_after_download(rig: Rig) -> None:
    src = rig.bundle("b2", 2)
    payload = job_bytes(src, "job-2")
    golden = src / "golden.json"
    golden.write_text(golden.read_text().replace("b2", "XX"))
    await rig.send(payload)
    states = await rig.watcher.until_final("job-2")
    assert _flow(states) == ["QUEUED:", "IN_PROGRESS:downloading", "REJECTED:"]
    assert str(states[-1]["reason"]).startswith("hash_mismatch")
    assert active_bundle(rig.state) is None
    assert rig.agent.activated == []


async def test_rules_that_do_not_compile_roll_back(rig: Rig) -> None:
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    await rig.watcher.until_final("job-2")
    bad = rig.tmp / "b3"
    make_bundle(bad, rig.key, 3, tag="b3")
    pack = bad / "rules" / "pump.yaml"
    pack.write_text("pack: broken\nrules:\n  - id: x\n    raise: 'score >'\n")
    # Re-sign over the broken pack: a correctly signed bundle with bad content.
    resign(bad, rig.key, 3)
    await rig.send(job_bytes(bad, "job-3"))
    states = await rig.watcher.until_final("job-3")
    assert _flow(states) == [*SUCCESS_FLOW[:-1], "FAILED:"]
    assert "rule packs do not compile" in str(states[-1]["reason"])
    assert states[-1]["active_version"] == 2
    assert rig.agent.activated == [2, 2]  # rolled back: the old bundle is activated again


async def test_model_that_fails_to_load_rolls_back_to_default(rig: Rig) -> None:
    rig.agent.fail_on.add(2)
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    states = await rig.watcher.until_final("job-2")
    assert states[-1]["status"] == "FAILED"
    assert "model does not load" in str(states[-1]["reason"])
    assert rig.agent.activated == [2, None]  # None: back to the packaged default
    assert active_bundle(rig.state) is None


async def test_scoring_errors_during_probation_roll_back(rig: Rig) -> None:
    rig.agent.scoring_errors_on.add(2)
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    states = await rig.watcher.until_final("job-2")
    assert states[-1]["status"] == "FAILED"
    assert "scoring errors during probation" in str(states[-1]["reason"])
    assert active_bundle(rig.state) is None


async def test_garbage_job_is_counted_not_run(rig: Rig) -> None:
    before = metrics.REGISTRY.get_sample_value(
        "edge_update_jobs_total", {"status": "dropped", "reason": "invalid"}
    )
    await rig.send(b"{not json", topic=f"{rig.root}/groups/pumps/jobs/notify")
    await rig.send(job_bytes(rig.bundle("b2", 2), "job-2"))
    await rig.watcher.until_final("job-2")  # the service lived on
    after = metrics.REGISTRY.get_sample_value(
        "edge_update_jobs_total", {"status": "dropped", "reason": "invalid"}
    )
    assert (after or 0) - (before or 0) == 1


async def test_job_with_bad_fields_is_rejected_with_the_reason(rig: Rig) -> None:
    await rig.send(b'{"job_id": "job-x", "version": 2, "manifest": {"format": 1}}')
    states = await rig.watcher.until_final("job-x")
    assert _flow(states) == ["REJECTED:"]
    assert str(states[-1]["reason"]).startswith("malformed")
    assert rig.agent.activated == []


async def test_a_job_that_finds_the_queue_full_is_told_so(rig: Rig) -> None:
    def job(i: int) -> bytes:
        return b'{"job_id": "q-%d", "version": 1, "manifest": {}}' % i

    # As paho delivers a burst: all on the loop before the worker takes the first.
    for i in range(17):  # EDGE_UPDATES__MAX_PENDING_JOBS=16
        rig.service._on_message("burst", job(i))
    states = await rig.watcher.until_final("q-16")
    assert _flow(states) == ["REJECTED:"]
    assert str(states[-1]["reason"]).startswith("queue_full")
    rig.service._on_message("burst", job(16))  # not stored as final: sent again, it is read
    states = await rig.watcher.until_final("q-16")
    assert str(states[-1]["reason"]).startswith("malformed")


async def test_unsafe_job_id_is_rejected_under_its_reference(rig: Rig) -> None:
    payload = job_bytes(rig.bundle("b2", 2), "../../x")
    await rig.send(payload)
    states = await rig.watcher.until_final(job_ref("../../x"))
    assert _flow(states) == ["REJECTED:"]
    await rig.send(payload)  # the same job again: its stored state, not a second report run
    again = await rig.watcher.until_final(job_ref("../../x"))
    assert again[-1]["seq"] != states[-1]["seq"]
    assert again[-1]["reason"] == states[-1]["reason"]
    assert rig.agent.activated == []
