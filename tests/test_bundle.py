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
from edge_agent.daemon.bundles.bundle import TrustedKeys, read_manifest, sign, verify_bundle
from edge_agent.daemon.bundles.manifest import (
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    BundleRejectedError,
    canonical,
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


# --- the one manifest validator (issue 18): the same rules for every source ----------------


def _resigned(path: Path, key: Ed25519PrivateKey, **changes: object) -> None:
    signed = read_manifest(path)
    write_manifest(path, sign(msgspec.structs.replace(signed, **changes), key))


def test_a_path_listed_twice_is_malformed_not_last_wins(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    make_bundle(tmp_path / "b", key, 1)
    text = (tmp_path / "b" / "manifest.json").read_text()
    other = '"golden.json": {"length": 1, "sha256": "' + "0" * 64 + '"},'
    (tmp_path / "b" / "manifest.json").write_text(text.replace('"files": {', '"files": {' + other))
    with pytest.raises(BundleRejectedError, match=r"'golden\.json' is listed twice") as info:
        _verify(tmp_path / "b", keys)
    assert info.value.reason == "malformed"


def test_a_field_given_twice_is_malformed(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    make_bundle(tmp_path / "b", key, 5)
    text = (tmp_path / "b" / "manifest.json").read_text()
    (tmp_path / "b" / "manifest.json").write_text(text.replace("{", '{"version": 1,', 1))
    assert _reason(tmp_path / "b", keys) == "malformed"


@pytest.mark.parametrize(
    ("inner", "outer"),
    [
        ("model/manifest.json/inner.bin", "model/manifest.json"),
        ("manifest.json/x", "manifest.json"),  # inside the bundle's own manifest
        ("golden.json/a/b", "golden.json"),
    ],
)
def test_a_path_inside_a_file_is_malformed(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys, inner: str, outer: str
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    _resigned(tmp_path / "b", key, files={**signed.files, inner: signed.files["golden.json"]})
    with pytest.raises(BundleRejectedError) as info:
        _verify(tmp_path / "b", keys)
    assert info.value.reason == "malformed"
    assert inner in info.value.detail
    assert outer in info.value.detail


def test_two_spellings_of_one_file_are_malformed(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    _resigned(
        tmp_path / "b", key, files={**signed.files, "Golden.json": signed.files["golden.json"]}
    )
    with pytest.raises(BundleRejectedError, match="same file on some disks"):
        _verify(tmp_path / "b", keys)


def test_a_rule_pack_named_twice_is_malformed(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    make_bundle(tmp_path / "b", key, 1)
    _resigned(tmp_path / "b", key, rules=["rules/pump.yaml", "rules/pump.yaml"])
    assert _reason(tmp_path / "b", keys) == "malformed"


def test_sizes_are_bounded_before_a_file_is_read(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    # Declared 1 TiB: refused on the manifest alone (the file on disk is small).
    huge = msgspec.structs.replace(signed.files["golden.json"], length=1 << 40)
    _resigned(tmp_path / "b", key, files={**signed.files, "golden.json": huge})
    assert _reason(tmp_path / "b", keys) == "too_large"
    many = {f"f/{i}": signed.files["golden.json"] for i in range(MAX_FILES + 1)}
    _resigned(tmp_path / "b", key, files={**signed.files, **many})
    assert _reason(tmp_path / "b", keys) == "too_large"
    (tmp_path / "b" / "manifest.json").write_bytes(b" " * (MAX_MANIFEST_BYTES + 1))
    assert _reason(tmp_path / "b", keys) == "too_large"


def test_the_size_limit_is_the_agents(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    signed = make_bundle(tmp_path / "b", key, 1)
    total = sum(e.length for e in signed.files.values())
    verify_bundle(tmp_path / "b", keys, highest=0, model_input=None, max_bundle_bytes=total)
    with pytest.raises(BundleRejectedError, match="EDGE_UPDATES__MAX_BUNDLE_BYTES") as info:
        verify_bundle(tmp_path / "b", keys, highest=0, model_input=None, max_bundle_bytes=total - 1)
    assert info.value.reason == "too_large"
