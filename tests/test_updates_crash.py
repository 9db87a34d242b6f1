"""SIGKILL at every durable step of an install: after a restart exactly one complete bundle
is active, the old or the new, and the job's final state is reported."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.readings import Outgoing, new_id
from edge_agent.daemon.bundles.bundle import Bundle
from edge_agent.daemon.bundles.probation import check_rules
from edge_agent.daemon.bundles.store import BundleStore, active_bundle
from edge_agent.daemon.bundles.updates import UpdateService
from edge_agent.simulator.broker import Broker
from tests.bundle_kit import MODEL_INPUT, make_bundle, write_keys
from tests.update_kit import StateWatcher, job_bytes, mqtt_client, update_settings

ROOT = Path(__file__).parent.parent


def _drive(state: Path, job: Path, keys: Path, port: int, root: str, kill_at: int) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bundle_crash_driver",
            *(str(state), str(job), str(keys), str(port), root, str(kill_at)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if kill_at:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


async def _restart_and_final(
    state: Path, keys: Path, port: int, root: str, bundle: Path
) -> tuple[str, list[int | None]]:
    """Start a fresh service over `state`; return job-2's final status it reports."""
    activated: list[int | None] = []

    async def activate(bundle: Bundle | None) -> None:
        activated.append(None if bundle is None else bundle.version)

    async with mqtt_client(port, "agent") as client, mqtt_client(port, "operator") as operator:
        service = UpdateService(
            update_settings(root, keys),
            client,
            state,
            "gw1",
            activate,
            model_input=MODEL_INPUT,
            check=check_rules,
        )
        watcher = StateWatcher(operator, service.state_topic)
        # Jobs are published retained: a job the dead agent had not yet recorded comes again.
        job = Outgoing(service.topics()[0], job_bytes(bundle, "job-2"), new_id(), retain=True)
        await operator.publish(job)
        task = asyncio.create_task(service.run())
        try:
            states = await watcher.until_final("job-2", timeout_s=30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return str(states[-1]["status"]), activated


async def test_sigkill_at_every_step(broker: Broker, topic_root: str, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    keys = write_keys(tmp_path / "trusted.keys", key)
    make_bundle(tmp_path / "b1", key, 1, tag="one")
    make_bundle(tmp_path / "b2", key, 2, tag="two")
    (tmp_path / "job1.json").write_bytes(job_bytes(tmp_path / "b1", "job-1"))
    (tmp_path / "job2.json").write_bytes(job_bytes(tmp_path / "b2", "job-2"))
    base = tmp_path / "base"
    _drive(base, tmp_path / "job1.json", keys, broker.port, f"{topic_root}/base", 0)

    def fresh(name: str) -> Path:
        state = tmp_path / name
        shutil.copytree(base, state, symlinks=True)
        return state

    out = _drive(fresh("count"), tmp_path / "job2.json", keys, broker.port, "x", 0)
    total = int(out.rsplit("fsync-count ", 1)[1])
    assert total > 10  # every step of the install is a kill point below
    outcomes: dict[int, str] = {}
    for kill_at in range(1, total + 1):
        state = fresh(f"kill{kill_at}")
        root = f"{topic_root}/k{kill_at}"
        _drive(state, tmp_path / "job2.json", keys, broker.port, root, kill_at)
        # What `current` names right after the kill, before any recovery: always complete.
        at_start = BundleStore(state).current()
        assert at_start is not None, kill_at
        assert at_start.version in (1, 2), kill_at
        status, activated = await _restart_and_final(
            state, keys, broker.port, root, tmp_path / "b2"
        )
        assert status in ("SUCCEEDED", "FAILED"), (kill_at, status)
        final = active_bundle(state)
        assert final is not None
        assert final.version == (2 if status == "SUCCEEDED" else 1), (kill_at, status)
        # The restarted agent ends up running what `current` names, never the other one.
        running = activated[-1] if activated else at_start.version
        assert running == final.version, (kill_at, at_start.version, activated)
        assert BundleStore(state).journal() is None
        outcomes[kill_at] = status
    # Killed before the swap, the job resumes and succeeds; killed in probation, it fails.
    assert outcomes[1] == "SUCCEEDED"
    assert "FAILED" in outcomes.values()
    print(outcomes)
