"""Bundle format, signatures and every rejection case, on real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.bundles.build import write_manifest
from edge_agent.daemon.bundles.bundle import (
    BundleRejectedError,
    TrustedKeys,
    canonical,
    sign,
    verify_bundle,
)
from tests.bundle_kit import MODEL_INPUT, make_bundle, write_keys


def _verify(path: Path, keys: TrustedKeys, highest: int = 0) -> None:
    verify_bundle(path, keys, highest=highest, model_input=MODEL_INPUT)


def _reason(path: Path, keys: TrustedKeys, highest: int = 0) -> str:
    with pytest.raises(BundleRejectedError) as info:
        _verify(path, keys, highest)
    return info.value.reason


def test_valid_bundle_verifies(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 3)
    bundle = verify_bundle(tmp_path / "b", keys, highest=2, model_input=MODEL_INPUT)
    assert bundle.version == 3
    assert bundle.model_manifest_path == tmp_path / "b" / "model" / "manifest.json"
    assert bundle.rule_pack_paths == [tmp_path / "b" / "rules" / "pump.yaml"]


def test_canonical_form_ignores_layout_and_signature(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    raw = json.loads((tmp_path / "b" / "manifest.json").read_text())
    # Re-encoded with another key order and spacing, it is still the same signed text.
    reordered = json.dumps(dict(reversed(list(raw.items()))), indent=7).encode()
    again = msgspec.json.decode(reordered, type=type(signed))
    assert canonical(again) == canonical(signed)
    assert b"signature" not in canonical(signed)
    assert b" " not in canonical(signed)


def test_rotation_accepts_either_trusted_key(tmp_path: Path) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = TrustedKeys.load(write_keys(tmp_path / "k", old, new))
    make_bundle(tmp_path / "a", old, 1)
    make_bundle(tmp_path / "b", new, 2)
    _verify(tmp_path / "a", keys)
    _verify(tmp_path / "b", keys)


def test_bad_signature(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    # A tampered field after signing: the signature no longer covers what is there.
    write_manifest(tmp_path / "b", msgspec.structs.replace(signed, version=99))
    assert _reason(tmp_path / "b", keys) == "bad_signature"


def test_unsigned(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    write_manifest(tmp_path / "b", msgspec.structs.replace(signed, signature=None))
    assert _reason(tmp_path / "b", keys) == "bad_signature"


def test_untrusted_key(tmp_path: Path, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", Ed25519PrivateKey.generate(), 1)
    assert _reason(tmp_path / "b", keys) == "untrusted_key"


def test_expired(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1, expires=datetime.now(UTC) - timedelta(seconds=1))
    assert _reason(tmp_path / "b", keys) == "expired"


@pytest.mark.parametrize("highest", [5, 6])
def test_version_not_above_highest(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys, highest: int
) -> None:
    make_bundle(tmp_path / "b", key, 5)
    assert _reason(tmp_path / "b", keys, highest) == "old_version"


def test_newer_agent_needed(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1, min_agent="999.0.0")
    assert _reason(tmp_path / "b", keys) == "agent_too_old"


def test_other_model_input_schema(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    make_bundle(tmp_path / "b", key, 1, model_input={**MODEL_INPUT, "window": 8})
    assert _reason(tmp_path / "b", keys) == "input_schema"


def test_hash_mismatch(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    pack = tmp_path / "b" / "rules" / "pump.yaml"
    pack.write_text(pack.read_text().replace("pump", "pomp"))  # same length, other bytes
    assert _reason(tmp_path / "b", keys) == "hash_mismatch"


def test_length_mismatch(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    with (tmp_path / "b" / "model" / "model.onnx").open("ab") as f:
        f.write(b"x")
    assert _reason(tmp_path / "b", keys) == "length_mismatch"


def test_missing_file(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    (tmp_path / "b" / "golden.json").unlink()
    assert _reason(tmp_path / "b", keys) == "missing_file"


def test_extra_file(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    (tmp_path / "b" / "rules" / "evil.yaml").write_text("pack: evil\n")
    assert _reason(tmp_path / "b", keys) == "extra_file"


@pytest.mark.parametrize("name", ["../outside.yaml", "/etc/passwd", "rules/../../x", "a//b"])
def test_path_escaping_the_bundle(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys, name: str
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    files = {**signed.files, name: signed.files["rules/pump.yaml"]}
    evil = sign(msgspec.structs.replace(signed, files=files, rules=[name]), key)
    write_manifest(tmp_path / "b", evil)
    assert _reason(tmp_path / "b", keys) == "unsafe_path"


def test_symlinked_file(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    pack = tmp_path / "b" / "rules" / "pump.yaml"
    outside = tmp_path / "outside.yaml"
    outside.write_bytes(pack.read_bytes())  # same bytes: only the link itself is at fault
    pack.unlink()
    pack.symlink_to(outside)
    assert _reason(tmp_path / "b", keys) == "unsafe_path"


def test_symlinked_directory(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    rules = tmp_path / "b" / "rules"
    rules.rename(tmp_path / "real-rules")
    rules.symlink_to(tmp_path / "real-rules")
    assert _reason(tmp_path / "b", keys) == "unsafe_path"


def test_malformed_manifest(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    make_bundle(tmp_path / "b", key, 1)
    (tmp_path / "b" / "manifest.json").write_text('{"format": 1, "version": "x"}')
    assert _reason(tmp_path / "b", keys) == "malformed"


def test_trusted_keys_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "k"
    bad.write_text("# comment\nrsa AAAA\n")
    with pytest.raises(ConfigError, match=r"k:2:"):
        TrustedKeys.load(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(ConfigError, match="no keys"):
        TrustedKeys.load(bad)
