"""The bundle manifest and its one validator, shared by `bundle verify`, the agent and every source.

`decode_manifest` is the only way bytes become a `BundleManifest`: from a bundle directory
(`bundle verify`, the store), from a job arriving inline or with a URL. Before any file is
looked at it enforces the layout rules, the same everywhere:

- every path stays inside the bundle (`unsafe_path`): relative, no `.`/`..`/empty parts, no
  backslash or NUL, not the manifest itself;
- no path is listed twice, not even as JSON keys the decoder would silently merge, nor as two
  spellings one file system could fold into one (case, Unicode normal form) (`malformed`);
- no path is a directory of another (`a/x` and `a/x/y` cannot both be files) (`malformed`);
- sizes are bounded: the manifest, the number of files, path lengths, and (`check_size`) the
  total the files add up to (`too_large`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import msgspec

from edge_agent.core.errors import BundleError

FORMAT = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILES = 1024
MAX_PATH_BYTES = 512
MAX_BUNDLE_BYTES = 512 << 20  # the default of EDGE_UPDATES__MAX_BUNDLE_BYTES
_HEX64 = re.compile(r"[0-9a-f]{64}")


class FileEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of a bundle: its sha256 (hex) and length in bytes."""

    sha256: str
    length: int


class Compat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a bundle needs from the agent that runs it."""

    min_agent: str
    model_input: dict[str, Any]


class Signature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An Ed25519 signature (base64) and the id of the key that made it."""

    key_id: str
    value: str


class BundleManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The bundle's `manifest.json`; `signature` is absent until `sign` adds it."""

    format: int
    version: int
    created: datetime
    expires: datetime
    compat: Compat
    model: str  # path of the model manifest inside the bundle
    rules: list[str]  # paths of the rule packs inside the bundle
    golden: str  # path of the golden input/output pair
    files: dict[str, FileEntry]
    signature: Signature | None = None


class BundleRejectedError(BundleError):
    """A bundle failed verification; `reason` is a short code for job states and metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def canonical(manifest: BundleManifest) -> bytes:
    """The signed bytes: the manifest without its signature, keys sorted, no whitespace."""
    body = msgspec.structs.replace(manifest, signature=None)
    builtins = msgspec.to_builtins(body, order="sorted")
    assert isinstance(builtins, dict)
    builtins.pop("signature", None)
    return msgspec.json.encode(builtins, order="sorted")


def encode_manifest(manifest: BundleManifest) -> bytes:
    """Manifest bytes as written to disk (sorted, indented for people reading it)."""
    return msgspec.json.format(msgspec.json.encode(manifest, order="sorted"), indent=2) + b"\n"


def _no_duplicate_keys(where: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BundleRejectedError("malformed", f"{where}: {key!r} is listed twice")
            seen.add(key)
        return dict(pairs)

    return hook


def reject_duplicate_keys(data: bytes, where: str) -> None:
    """Raise `malformed` if any JSON object in `data` has a key twice (decoders keep the last)."""
    try:
        json.loads(data, object_pairs_hook=_no_duplicate_keys(where))
    except (ValueError, RecursionError) as exc:  # msgspec's decode names the fault better
        if isinstance(exc, BundleRejectedError):
            raise
        raise BundleRejectedError("malformed", f"{where}: not JSON ({exc})") from exc


def decode_manifest(data: bytes, where: str) -> BundleManifest:
    """Parse and validate manifest bytes; a rejection names `where` and the path at fault."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleRejectedError("too_large", f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = msgspec.json.decode(data, type=BundleManifest)
    except msgspec.ValidationError as exc:
        raise BundleRejectedError("malformed", f"{where}: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BundleRejectedError("malformed", f"{where}: not JSON ({exc})") from exc
    reject_duplicate_keys(data, where)
    if manifest.format != FORMAT:
        raise BundleRejectedError(
            "malformed", f"{where}: format {manifest.format}, expected {FORMAT}"
        )
    for when in (manifest.created, manifest.expires):
        if when.tzinfo is None:
            raise BundleRejectedError("malformed", f"{where}: times must carry a UTC offset")
    check_layout(manifest, where)
    return manifest


def check_path(name: str) -> PurePosixPath:
    """Reject a manifest path that could leave the bundle directory or shadow the manifest."""
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in name.split("/"))
        or name == MANIFEST
    ):
        raise BundleRejectedError("unsafe_path", f"manifest path {name!r} escapes the bundle")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise BundleRejectedError("malformed", f"manifest path {name[:64]!r}...: too long")
    return pure


def _folded(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _distinct(manifest: BundleManifest, where: str) -> dict[str, str]:
    """Each path checked and folded; two that fold together are one file on some disks."""
    folded: dict[str, str] = {_folded(MANIFEST): MANIFEST}
    for name, entry in manifest.files.items():
        check_path(name)
        if entry.length < 0 or not _HEX64.fullmatch(entry.sha256):
            raise BundleRejectedError("malformed", f"{name}: bad length or sha256 in the manifest")
        other = folded.setdefault(_folded(name), name)
        if other != name:
            raise BundleRejectedError(
                "malformed", f"{where}: {other} and {name} name the same file on some disks"
            )
    return folded


def check_layout(manifest: BundleManifest, where: str = MANIFEST) -> None:
    """Paths safe, none twice, none inside another, references listed, entries well formed."""
    if len(manifest.files) > MAX_FILES:
        raise BundleRejectedError(
            "too_large", f"{where}: {len(manifest.files)} files, at most {MAX_FILES}"
        )
    folded = _distinct(manifest, where)
    for name in manifest.files:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = folded.get(_folded("/".join(parts[:depth])))
            if parent is not None:
                raise BundleRejectedError(
                    "malformed", f"{where}: {parent} is a file, so {name} cannot be inside it"
                )
    named = [manifest.model, manifest.golden, *manifest.rules]
    for name in named:
        check_path(name)
        if name not in manifest.files:
            raise BundleRejectedError("malformed", f"{name} is named but not listed in files")
    if len(set(manifest.rules)) != len(manifest.rules):
        raise BundleRejectedError("malformed", f"{where}: a rule pack is listed twice in rules")


def check_size(manifest: BundleManifest, limit: int) -> None:
    """Refuse, before anything is fetched or read, a bundle larger than `limit` bytes."""
    total = sum(e.length for e in manifest.files.values())
    if total > limit:
        raise BundleRejectedError(
            "too_large", f"{total} bytes in files, EDGE_UPDATES__MAX_BUNDLE_BYTES={limit}"
        )
