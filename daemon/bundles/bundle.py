"""Bundles: what the agent thinks with (model, rule packs, golden pair), signed and verified.

A bundle is a directory with a signed `manifest.json` at its root (its format and layout
rules: manifest.py). The manifest lists every other file with its sha256 and length;
nothing else may be in the directory, and nothing in it may be a link. The signature is
Ed25519 over a domain tag plus the canonical manifest (JSON, keys sorted, no whitespace,
UTF-8, without the `signature` member), so re-encoding by any tool cannot change what was
signed. Keys are named by the first 16 hex digits of the sha256 of the raw public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, NotRequired, TypedDict, Unpack

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.bundles.manifest import (
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    BundleManifest,
    BundleRejectedError,
    Signature,
    canonical,
    check_size,
    decode_manifest,
)

SIGNED_TAG = b"edge-agent-bundle-v1\n"

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    path: Path
    manifest: BundleManifest

    @property
    def version(self) -> int:
        """The bundle's version (monotonic across a fleet)."""
        return self.manifest.version

    @property
    def model_manifest_path(self) -> Path:
        """The model manifest inside the bundle."""
        return self.path / self.manifest.model

    @property
    def rule_pack_paths(self) -> list[Path]:
        """The rule packs inside the bundle, in manifest order."""
        return [self.path / p for p in self.manifest.rules]

    @property
    def golden_path(self) -> Path:
        """The golden input/output pair used in probation."""
        return self.path / self.manifest.golden

    @property
    def model_input(self) -> dict[str, Any]:
        """The model input schema this bundle was built for."""
        return self.manifest.compat.model_input


def agent_version() -> str:
    """The installed agent's version (the distribution's)."""
    try:
        return metadata.version("edge-agent")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text.split("+", 1)[0])
    return tuple(int(p) for p in parts[:3])


# --- keys -------------------------------------------------------------------------------


def key_id(key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: 16 hex digits of sha256 over its raw bytes."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_line(key: Ed25519PublicKey, comment: str = "") -> str:
    """One line of a trusted-keys file: `ed25519 <base64 raw key> [comment]`."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"ed25519 {base64.b64encode(raw).decode()} {comment}".rstrip()


class TrustedKeys:
    """The public keys a bundle may be signed with; several at once so keys can rotate."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: Path) -> TrustedKeys:
        """Read a trusted-keys file (`ed25519 <base64> [comment]` per line, `#` comments)."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"trusted keys file {path}: cannot be read ({exc})") from exc
        keys: dict[str, Ed25519PublicKey] = {}
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] != "ed25519" or len(words) < 2:
                raise ConfigError(f"{path}:{number}: expected `ed25519 <base64 key> [comment]`")
            try:
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(words[1], validate=True))
            except (ValueError, binascii.Error) as exc:
                raise ConfigError(f"{path}:{number}: not an Ed25519 public key ({exc})") from exc
            keys[key_id(key)] = key
        if not keys:
            raise ConfigError(f"trusted keys file {path}: no keys")
        return cls(keys)


# --- manifest ---------------------------------------------------------------------------


def sign(manifest: BundleManifest, private_key: Ed25519PrivateKey) -> BundleManifest:
    """Return the manifest with an Ed25519 signature by `private_key`."""
    value = private_key.sign(SIGNED_TAG + canonical(manifest))
    signature = Signature(key_id=key_id(private_key.public_key()), value=_b64(value))
    return msgspec.structs.replace(manifest, signature=signature)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def read_manifest(bundle_dir: Path) -> BundleManifest:
    """Read `bundle_dir/manifest.json` without following a link."""
    path = bundle_dir / MANIFEST
    return decode_manifest(_read_regular(path, MAX_MANIFEST_BYTES + 1), str(path))


@contextmanager
def _open_regular(path: Path) -> Iterator[BinaryIO]:
    """Open a regular file for reading, never through a link; BundleRejectedError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise BundleRejectedError("missing_file", f"{path} does not exist") from exc
    except OSError as exc:  # ELOOP: the name is a link
        raise BundleRejectedError(
            "unsafe_path", f"{path}: cannot be opened as a file ({exc})"
        ) from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BundleRejectedError("unsafe_path", f"{path} is not a regular file")
        yield f


def _read_regular(path: Path, limit: int) -> bytes:
    with _open_regular(path) as f:
        return f.read(limit)


def check_signature(manifest: BundleManifest, keys: TrustedKeys) -> None:
    """Check the manifest's Ed25519 signature against the trusted keys."""
    signature = manifest.signature
    if signature is None:
        raise BundleRejectedError("bad_signature", "the manifest is not signed")
    key = keys.keys.get(signature.key_id)
    if key is None:
        raise BundleRejectedError("untrusted_key", f"signed by key {signature.key_id}, not trusted")
    try:
        key.verify(
            base64.b64decode(signature.value, validate=True), SIGNED_TAG + canonical(manifest)
        )
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise BundleRejectedError(
            "bad_signature", f"signature by {signature.key_id} fails"
        ) from exc


class Acceptance(TypedDict):
    """What a bundle must meet here beyond a trusted signature (keywords of the checks).

    `highest` is the highest version ever accepted here; `model_input` the schema the agent
    feeds its model (None accepts any); `now` when expiry is judged (default: now); `running`
    the agent version (default: installed); `max_bundle_bytes` what the files may add up to
    (default: EDGE_UPDATES__MAX_BUNDLE_BYTES's default).
    """

    highest: int
    model_input: dict[str, Any] | None
    now: NotRequired[datetime | None]
    running: NotRequired[str | None]
    max_bundle_bytes: NotRequired[int]


def check_manifest(
    manifest: BundleManifest, keys: TrustedKeys, **acceptance: Unpack[Acceptance]
) -> None:
    """Check size, signature, expiry, version and compatibility: all but the files' contents.

    The layout (paths, duplicates, overlaps) was checked when the manifest was decoded.
    """
    check_size(manifest, acceptance.get("max_bundle_bytes", MAX_BUNDLE_BYTES))
    check_signature(manifest, keys)
    highest, model_input = acceptance["highest"], acceptance["model_input"]
    now = acceptance.get("now") or datetime.now(UTC)
    if manifest.expires <= now:
        raise BundleRejectedError("expired", f"expired at {manifest.expires.isoformat()}")
    if manifest.version <= highest:
        raise BundleRejectedError(
            "old_version",
            f"version {manifest.version} is not above {highest}, the highest accepted",
        )
    running = acceptance.get("running") or agent_version()
    if _version_tuple(manifest.compat.min_agent) > _version_tuple(running):
        raise BundleRejectedError(
            "agent_too_old", f"needs agent {manifest.compat.min_agent}, this is {running}"
        )
    if model_input is not None and manifest.compat.model_input != model_input:
        raise BundleRejectedError(
            "input_schema",
            f"model input {manifest.compat.model_input} differs from the agent's {model_input}",
        )


def file_digest(path: Path, limit: int) -> tuple[str, int]:
    """sha256 and length of a regular file (not a link), reading at most `limit` + 1 bytes."""
    digest = hashlib.sha256()
    length = 0
    with _open_regular(path) as f:
        while length <= limit:
            chunk = f.read(min(_CHUNK, limit + 1 - length))
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
    return digest.hexdigest(), length


def _regular_files(bundle_dir: Path) -> set[str]:
    """Relative names of the regular files under `bundle_dir`; a link anywhere is rejected."""
    found: set[str] = set()
    for root, dirs, files in os.walk(bundle_dir):
        for name in [*dirs, *files]:
            full = Path(root) / name
            rel = full.relative_to(bundle_dir).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleRejectedError("unsafe_path", f"{rel} is a link")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise BundleRejectedError("unsafe_path", f"{rel} is not a regular file")
            found.add(rel)
            if len(found) > MAX_FILES + 1:  # the manifest and MAX_FILES others, at most
                raise BundleRejectedError("extra_file", f"{rel}: more files than a manifest lists")
    return found


def check_files(bundle_dir: Path, manifest: BundleManifest) -> None:
    """Check that the directory holds exactly the listed files, no links, hashes matching."""
    found = _regular_files(bundle_dir)
    found.discard(MANIFEST)
    extra = sorted(found - manifest.files.keys())
    if extra:
        raise BundleRejectedError("extra_file", f"{extra[0]} is not in the manifest")
    for name, entry in sorted(manifest.files.items()):
        if name not in found:
            raise BundleRejectedError("missing_file", f"{name} is listed but missing")
        sha, length = file_digest(bundle_dir / name, entry.length)
        if length != entry.length:
            raise BundleRejectedError(
                "length_mismatch", f"{name}: {length} bytes, manifest says {entry.length}"
            )
        if sha != entry.sha256:
            raise BundleRejectedError("hash_mismatch", f"{name}: sha256 differs from the manifest")


def verify_bundle(bundle_dir: Path, keys: TrustedKeys, **acceptance: Unpack[Acceptance]) -> Bundle:
    """Verify a bundle directory completely; raise BundleRejectedError with the reason."""
    manifest = read_manifest(bundle_dir)
    check_manifest(manifest, keys, **acceptance)
    check_files(bundle_dir, manifest)
    return Bundle(bundle_dir, manifest)
