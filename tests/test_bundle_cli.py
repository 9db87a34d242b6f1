"""`edge-agent bundle keygen|build|sign|verify|publish` on the real model and rule pack."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from edge_agent.daemon.bundles import cli as bundle_cli
from edge_agent.daemon.bundles.build import describe_files, write_manifest
from edge_agent.daemon.bundles.bundle import Bundle, read_manifest, sign
from edge_agent.daemon.bundles.cli import register
from edge_agent.daemon.bundles.probation import ProbationError, check_bundle, check_golden
from edge_agent.daemon.bundles.store import active_bundle
from edge_agent.daemon.bundles.updates import UpdateService
from edge_agent.models.manifest import default_manifest_path
from edge_agent.rules.pack import default_pack_path
from edge_agent.simulator.broker import Broker
from tests.update_kit import cli as _cli
from tests.update_kit import mqtt_client, update_settings


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path]:
    """A real bundle (shipped model, default pack, golden pair made now), built and signed."""
    assert _cli("bundle", "keygen", "--out", str(tmp_path / "ops")) == 0
    out = tmp_path / "b7"
    model, pack = str(default_manifest_path()), str(default_pack_path())
    assert _cli("bundle", "build", "--model", model, "--rules", pack, "--version", "7",
                "--out", str(out)) == 0  # fmt: skip
    assert _cli("bundle", "sign", str(out), "--key", str(tmp_path / "ops.key")) == 0
    return out, tmp_path / "ops.pub"


def test_keygen_keeps_the_private_key_private(tmp_path: Path) -> None:
    assert _cli("bundle", "keygen", "--out", str(tmp_path / "k")) == 0
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert (tmp_path / "k.pub").read_text().startswith("ed25519 ")
    with pytest.raises(Exception, match="exists"):
        _cli("bundle", "keygen", "--out", str(tmp_path / "k"))


def test_build_sign_verify(signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    bundle_dir, pub = signed
    model = str(default_manifest_path())
    assert _cli("bundle", "verify", str(bundle_dir), "--trusted-keys", str(pub),
                "--model", model) == 0  # fmt: skip
    assert "OK" in capsys.readouterr().out
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["compat"]["model_input"]["window"] > 1
    assert "model/manifest.json" in manifest["files"]
    # The bundle's model really reproduces its golden pair, and its rules compile.
    check_bundle(Bundle(bundle_dir, read_manifest(bundle_dir)))
    assert _cli("bundle", "verify", str(bundle_dir), "--trusted-keys", str(pub),
                "--highest", "7") == 1  # fmt: skip
    assert "old_version" in capsys.readouterr().err


def test_golden_check_catches_a_different_model_output(
    signed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bundle_dir, pub = signed
    golden = bundle_dir / "golden.json"
    pair = json.loads(golden.read_text())
    pair["artifacts"]["pump-fault.fp32.onnx"]["score"][0] += 1.0
    golden.write_text(json.dumps(pair))
    match = "model/pump-fault.fp32.onnx: golden check: score differs"
    with pytest.raises(ProbationError, match=match):
        check_golden(Bundle(bundle_dir, read_manifest(bundle_dir)))
    # Signed over the new golden pair, `bundle verify` says what the gateway would: FAILED.
    manifest = msgspec.structs.replace(read_manifest(bundle_dir), files=describe_files(bundle_dir))
    key = load_pem_private_key((bundle_dir.parent / "ops.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    write_manifest(bundle_dir, sign(manifest, key))
    capsys.readouterr()
    assert _cli("bundle", "verify", str(bundle_dir), "--trusted-keys", str(pub)) == 1
    assert capsys.readouterr().err.startswith(f"FAILED {bundle_dir}: probation: {match}")
    assert _cli("bundle", "verify", str(bundle_dir), "--trusted-keys", str(pub),
                "--no-probation") == 0  # fmt: skip


async def test_publish_and_wait(
    signed: tuple[Path, Path], broker: Broker, topic_root: str, tmp_path: Path
) -> None:
    bundle_dir, pub = signed
    env = tmp_path / "ops.env"
    env.write_text(
        f"EDGE_UPDATES__GATEWAY_TOPIC={topic_root}/{{gateway}}/jobs/notify\n"
        f"EDGE_UPDATES__STATE_TOPIC={topic_root}/{{gateway}}/jobs/state\n"
    )
    activated: list[int | None] = []

    async def activate(bundle: Bundle | None) -> None:
        activated.append(None if bundle is None else bundle.version)

    async with mqtt_client(broker.port, "agent") as client:
        service = UpdateService(
            update_settings(topic_root, pub), client, tmp_path / "state", "gw9", activate
        )
        task = asyncio.create_task(service.run())
        await client.connected.wait()
        code = await asyncio.to_thread(
            _cli, "bundle", "publish", str(bundle_dir), "--gateway", "gw9", "--port",
            str(broker.port), "--wait", "60", "--env-file", str(env),
        )  # fmt: skip
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert code == 0
    assert activated == [7]
    current = active_bundle(tmp_path / "state")
    assert current is not None
    assert current.version == 7


def test_each_publish_is_a_new_job(signed: tuple[Path, Path]) -> None:
    bundle_dir, _ = signed
    parser = argparse.ArgumentParser(prog="edge-agent")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bundle", "publish", str(bundle_dir), "--gateway", "g"])
    first, second = bundle_cli._job(args), bundle_cli._job(args)
    assert first.job_id != second.job_id  # a second publish is a second job, not a duplicate
    assert first.job_id.startswith("bundle-7-")
    assert set(first.inline) == set(read_manifest(bundle_dir).files)
