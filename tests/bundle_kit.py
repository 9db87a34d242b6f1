"""Build real, signed bundles on disk for the bundle and update tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.build import make_manifest, write_manifest
from edge_agent.daemon.bundles.bundle import public_key_line, sign
from edge_agent.daemon.bundles.manifest import BundleManifest

DEFAULT_PACK = Path(__file__).parent.parent / "rules" / "packs" / "default.yaml"
MODEL_INPUT: dict[str, Any] = {"signals": ["temp", "vib"], "window": 4, "rate_hz": 1.0}


def write_keys(path: Path, *keys: Ed25519PrivateKey) -> Path:
    """A trusted-keys file holding the public halves of `keys`."""
    lines = [f"{public_key_line(k.public_key(), f'key{i}')}\n" for i, k in enumerate(keys)]
    path.write_text("# trusted bundle keys\n" + "".join(lines))
    return path


def lay_out(bundle_dir: Path, tag: str = "a") -> None:
    """Place a model manifest, a model file, a rule pack and a golden pair."""
    (bundle_dir / "model").mkdir(parents=True, exist_ok=True)
    (bundle_dir / "rules").mkdir(exist_ok=True)
    (bundle_dir / "model" / "manifest.json").write_text(json.dumps({"tag": tag}))
    (bundle_dir / "model" / "model.onnx").write_bytes(b"\x08\x07" + tag.encode() * 100)
    # The real default pack, so that probation compiles real rules; the tag keeps bundles apart.
    (bundle_dir / "rules" / "pump.yaml").write_text(f"{DEFAULT_PACK.read_text()}\n# {tag}\n")
    (bundle_dir / "golden.json").write_text(json.dumps({"tag": tag}))


def make_bundle(
    bundle_dir: Path,
    key: Ed25519PrivateKey,
    version: int,
    *,
    tag: str = "a",
    expires: datetime | None = None,
    min_agent: str = "0.0.1",
    model_input: dict[str, Any] | None = None,
) -> BundleManifest:
    """Lay out and sign a bundle; return its manifest."""
    lay_out(bundle_dir, tag)
    return resign(
        bundle_dir,
        key,
        version,
        expires=expires or datetime.now(UTC) + timedelta(days=1),
        min_agent=min_agent,
        model_input=model_input,
    )


def resign(
    bundle_dir: Path,
    key: Ed25519PrivateKey,
    version: int,
    *,
    expires: datetime | None = None,
    min_agent: str = "0.0.1",
    model_input: dict[str, Any] | None = None,
) -> BundleManifest:
    """Describe and sign the files laid out in `bundle_dir` (again, if they were edited)."""
    manifest = make_manifest(
        bundle_dir,
        version=version,
        model="model/manifest.json",
        rules=["rules/pump.yaml"],
        golden="golden.json",
        model_input=model_input if model_input is not None else MODEL_INPUT,
        expires=expires,
        min_agent=min_agent,
    )
    signed = sign(manifest, key)
    write_manifest(bundle_dir, signed)
    return signed
