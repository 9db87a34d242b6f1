"""Operator side of bundles: lay out a bundle directory and write its (unsigned) manifest."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NotRequired, TypedDict, Unpack

from edge_agent.core.errors import BundleError
from edge_agent.daemon.bundles.bundle import agent_version, file_digest
from edge_agent.daemon.bundles.manifest import (
    FORMAT,
    MANIFEST,
    BundleManifest,
    Compat,
    FileEntry,
    check_path,
    encode_manifest,
)

MODEL_DIR = "model"
RULES_DIR = "rules"
GOLDEN = "golden.json"


def describe_files(bundle_dir: Path) -> dict[str, FileEntry]:
    """sha256 and length of every file under `bundle_dir` except the manifest; no links."""
    files: dict[str, FileEntry] = {}
    for root, dirs, names in os.walk(bundle_dir):
        for name in [*dirs, *names]:
            full = Path(root) / name
            if stat.S_ISLNK(full.lstat().st_mode):
                raise BundleError(f"{full}: links are not allowed in a bundle")
        for name in names:
            full = Path(root) / name
            rel = full.relative_to(bundle_dir).as_posix()
            if rel == MANIFEST:
                continue
            check_path(rel)
            sha, length = file_digest(full, full.stat().st_size)
            files[rel] = FileEntry(sha256=sha, length=length)
    return dict(sorted(files.items()))


class Terms(TypedDict):
    """What a manifest states besides its files: the version and what the bundle needs.

    `expires` defaults to 90 days from now, `min_agent` to the agent version building it.
    """

    version: int
    model_input: dict[str, Any]
    expires: NotRequired[datetime | None]
    min_agent: NotRequired[str | None]


def make_manifest(
    bundle_dir: Path, *, model: str, rules: Sequence[str], golden: str, **terms: Unpack[Terms]
) -> BundleManifest:
    """Describe the files already laid out in `bundle_dir` as an unsigned manifest."""
    version = terms["version"]
    if version < 1:
        raise BundleError(f"--version {version}: must be a positive integer")
    now = datetime.now(UTC).replace(microsecond=0)
    min_agent = terms.get("min_agent") or agent_version()
    return BundleManifest(
        format=FORMAT,
        version=version,
        created=now,
        expires=terms.get("expires") or now + timedelta(days=90),
        compat=Compat(min_agent=min_agent, model_input=terms["model_input"]),
        model=model,
        rules=list(rules),
        golden=golden,
        files=describe_files(bundle_dir),
    )


def _copy(src: Path, dest: Path) -> None:
    if not src.is_file():
        raise BundleError(f"{src}: no such file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def build(
    out_dir: Path,
    *,
    model_manifest: Path,
    model_files: Sequence[Path],
    rule_packs: Sequence[Path],
    golden: Path,
    **terms: Unpack[Terms],
) -> BundleManifest:
    """Copy the parts into a fresh `out_dir` and write the unsigned `manifest.json`.

    The model manifest and its files go to `model/` (their relative layout kept), rule packs
    to `rules/`, the golden pair to `golden.json`.
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise BundleError(f"--out {out_dir}: exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    base = model_manifest.parent
    _copy(model_manifest, out_dir / MODEL_DIR / model_manifest.name)
    for path in model_files:
        try:
            rel = path.resolve().relative_to(base.resolve())
        except ValueError as exc:
            raise BundleError(f"model file {path} is not under {base}") from exc
        _copy(path, out_dir / MODEL_DIR / rel)
    names = [p.name for p in rule_packs]
    if len(set(names)) != len(names):
        raise BundleError(f"--rules: two packs share a file name ({names})")
    for path in rule_packs:
        _copy(path, out_dir / RULES_DIR / path.name)
    _copy(golden, out_dir / GOLDEN)
    manifest = make_manifest(
        out_dir,
        model=f"{MODEL_DIR}/{model_manifest.name}",
        rules=[f"{RULES_DIR}/{n}" for n in names],
        golden=GOLDEN,
        **terms,
    )
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(bundle_dir: Path, manifest: BundleManifest) -> None:
    """Write `manifest.json` into a bundle directory."""
    (bundle_dir / MANIFEST).write_bytes(encode_manifest(manifest))


def model_input_of(model_manifest: Path | None) -> dict[str, Any]:
    """The model input schema a bundle's compatibility states: signals, rate, window, dtype.

    None reads the model shipped with the agent (what an agent without a bundle runs).
    """
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415 - pydantic model

    manifest = load_manifest(model_manifest)
    return {
        "signals": list(manifest.signals),
        "rate_hz": manifest.rate_hz,
        "window": manifest.window,
        "dtype": manifest.input.dtype,
    }


def model_files(model_manifest: Path) -> list[Path]:
    """The files a model manifest lists (verified against their hashes on the way)."""
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

    manifest = load_manifest(model_manifest)
    return [manifest.directory / a.file for a in manifest.artifacts]
