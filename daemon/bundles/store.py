"""Bundles on disk: staging, the atomic `current` swap, rollback and crash recovery.

Layout under `<state_dir>/bundles/`:
    v00000007/      complete, verified bundles (at most `current` and `previous` are kept)
    current         symlink to the active bundle; replaced with one rename(2)
    previous        symlink to the bundle `current` replaced, for rollback
    highest         the highest version ever accepted, outside any bundle
    journal.json    the install in flight: which job, which step, what to roll back to
    jobs/<id>.json  final state of each job (bounded), so a job delivered twice runs once
    incoming/<id>/  downloads, kept across restarts so they resume
    .stage-*        a bundle being copied in; removed at recovery

Every write is write-temp, fsync, rename, fsync-directory, so a SIGKILL at any point leaves
either the old or the new state, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import msgspec
import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import BundleError
from edge_agent.daemon.bundles.bundle import (
    Bundle,
    TrustedKeys,
    check_files,
    check_signature,
    read_manifest,
    verify_bundle,
)
from edge_agent.daemon.bundles.jobs import JOB_ID
from edge_agent.daemon.bundles.manifest import (
    MANIFEST,
    BundleManifest,
    BundleRejectedError,
    encode_manifest,
)

log = structlog.get_logger(__name__)

MAX_JOB_RECORDS = 200
# Steps before `current` is swapped: a crash there leaves the running bundle as it was.
PRE_SWAP_STEPS = frozenset({"downloading", "verifying", "staging"})
_COPY_CHUNK = 1 << 16


class Journal(msgspec.Struct, frozen=True):
    """The install in flight; present from the first step until the final state is stored."""

    job_id: str
    version: int
    step: str
    previous: str | None  # name of the bundle directory `current` pointed to, if any


class JobRecord(msgspec.Struct, frozen=True):
    """The final state of one job."""

    job_id: str
    version: int
    status: str
    reason: str = ""
    reported: bool = False


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def _dir_name(version: int) -> str:
    return f"v{version:08d}"


class BundleStore:
    """The bundles under one state directory; one instance per process."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "bundles"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(exist_ok=True)
        (self.root / "incoming").mkdir(exist_ok=True)

    # --- the highest accepted version ----------------------------------------------------

    @property
    def highest(self) -> int:
        """The highest version ever accepted here (0 when none)."""
        try:
            text = (self.root / "highest").read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        try:
            return int(text)
        except ValueError as exc:
            # Never treat a damaged record as 0: that would re-open the door to old bundles.
            raise BundleError(f"{self.root / 'highest'}: not a version number") from exc

    def _accept(self, version: int) -> None:
        if version > self.highest:
            write_atomic(self.root / "highest", f"{version}\n".encode())

    # --- links -----------------------------------------------------------------------------

    def _target(self, link: str) -> str | None:
        try:
            target = str((self.root / link).readlink())
        except FileNotFoundError:
            return None
        except OSError:
            log.warning("bundle_link_broken", link=link)
            return None
        return target if "/" not in target else None

    def _set_link(self, link: str, target: str | None) -> None:
        path = self.root / link
        if target is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fsync_dir(self.root)
            return
        tmp = self.root / f".{link}.{uuid.uuid4().hex[:8]}"
        tmp.symlink_to(target)
        tmp.replace(path)  # rename(2) over the old link: readers see old or new, never none
        fsync_dir(self.root)

    def current_version(self) -> int:
        """Version of the bundle `current` names, from its manifest alone (0: none)."""
        name = self._target("current")
        if name is None:
            return 0
        try:
            return read_manifest(self.root / name).version
        except BundleRejectedError:
            return 0

    def current(self, keys: TrustedKeys | None = None) -> Bundle | None:
        """The bundle `current` points to, its files re-checked; None if none or damaged."""
        name = self._target("current")
        if name is None:
            return None
        path = self.root / name
        try:
            manifest = read_manifest(path)
            if keys is not None:
                check_signature(manifest, keys)
            check_files(path, manifest)
        except BundleRejectedError as exc:
            metrics.BUNDLE_EVENTS.labels(event="current_damaged").inc()
            log.exception(
                "bundle_current_damaged", path=str(path), reason=exc.reason, detail=exc.detail
            )
            return None
        return Bundle(path, manifest)

    # --- journal and job records -----------------------------------------------------------

    def journal(self) -> Journal | None:
        """The install in flight, if any."""
        try:
            return msgspec.json.decode((self.root / "journal.json").read_bytes(), type=Journal)
        except FileNotFoundError:
            return None
        except msgspec.DecodeError as exc:  # a torn write cannot happen; a hand edit can
            raise BundleError(f"{self.root / 'journal.json'}: unreadable ({exc})") from exc

    def begin(self, job_id: str, version: int, step: str) -> None:
        """Record that a job has reached `step` (before the step's effects)."""
        entry = Journal(job_id, version, step, self._target("current"))
        old = self.journal()
        if old is not None and old.job_id == job_id:
            entry = msgspec.structs.replace(entry, previous=old.previous)
        write_atomic(self.root / "journal.json", msgspec.json.encode(entry))

    def _end(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "journal.json").unlink()
        fsync_dir(self.root)

    def _record_path(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise BundleError(f"job id {job_id!r}: use 1-128 of A-Z a-z 0-9 . _ -, not only dots")
        return self.root / "jobs" / f"{job_id}.json"

    def record(self, job_id: str) -> JobRecord | None:
        """The final state stored for `job_id`, if it ended."""
        try:
            data = self._record_path(job_id).read_bytes()
        except FileNotFoundError:
            return None
        return msgspec.json.decode(data, type=JobRecord)

    def finish(self, rec: JobRecord) -> None:
        """Store a job's final state, then close the journal (in that order, for recovery)."""
        write_atomic(self._record_path(rec.job_id), msgspec.json.encode(rec))
        journal = self.journal()
        if journal is not None and journal.job_id == rec.job_id:
            self._end()
        self._prune_records()

    def unreported(self) -> list[JobRecord]:
        """Final states not yet confirmed as published, oldest first."""
        recs = []
        for path in sorted((self.root / "jobs").glob("*.json"), key=lambda p: p.stat().st_mtime):
            rec = msgspec.json.decode(path.read_bytes(), type=JobRecord)
            if not rec.reported:
                recs.append(rec)
        return recs

    def mark_reported(self, rec: JobRecord) -> None:
        """Note that a final state reached the broker."""
        write_atomic(
            self._record_path(rec.job_id),
            msgspec.json.encode(msgspec.structs.replace(rec, reported=True)),
        )

    def _prune_records(self) -> None:
        paths = sorted((self.root / "jobs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        for path in paths[:-MAX_JOB_RECORDS]:
            # Oldest first: a job this old delivered again is refused by its version anyway.
            path.unlink(missing_ok=True)
            metrics.BUNDLE_EVENTS.labels(event="job_record_pruned").inc()

    # --- install ---------------------------------------------------------------------------

    def incoming(self, job_id: str) -> Path:
        """The download directory of a job (kept across restarts so downloads resume)."""
        self._record_path(job_id)
        path = self.root / "incoming" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, source: Path, manifest: BundleManifest) -> Path:
        """Copy a verified bundle into `vNNNNNNNN/` durably; return the bundle directory."""
        final = self.root / _dir_name(manifest.version)
        if final.exists():
            # Left by an earlier attempt that died after staging: reuse only if intact.
            try:
                check_files(final, read_manifest(final))
            except BundleRejectedError:
                shutil.rmtree(final)
            else:
                return final
        stage = self.root / f".stage-{manifest.version}-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
        for name in sorted(manifest.files):
            dest = stage / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with (source / name).open("rb") as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
                out.flush()
                os.fsync(out.fileno())
        (stage / MANIFEST).write_bytes(encode_manifest(manifest))
        with (stage / MANIFEST).open("rb") as f:
            os.fsync(f.fileno())
        for root, _dirs, _files in os.walk(stage, topdown=False):
            fsync_dir(Path(root))
        check_files(stage, manifest)  # what we copied is what we verified
        stage.rename(final)
        fsync_dir(self.root)
        return final

    def swap(self, bundle_dir: Path, version: int) -> None:
        """Accept `version` and point `current` at `bundle_dir` (old one becomes `previous`)."""
        self._accept(version)
        old = self._target("current")
        if old is not None and old != bundle_dir.name:
            self._set_link("previous", old)
        self._set_link("current", bundle_dir.name)

    def rollback(self, to: str | None) -> None:
        """Point `current` back at the bundle directory `to` (None: the packaged default)."""
        self._set_link("current", to)
        metrics.BUNDLE_EVENTS.labels(event="rollback").inc()
        log.warning("bundle_rolled_back", to=to or "packaged default")

    # --- recovery --------------------------------------------------------------------------

    def recover(self) -> JobRecord | None:
        """Finish what a crash interrupted; return the job record it wrote, if any.

        A crash before the swap leaves `current` as it was. A crash after it (during load or
        probation) is treated as a failed probation: the new bundle may be what killed us.
        """
        for stale in self.root.glob(".stage-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        journal = self.journal()
        rec: JobRecord | None = None
        if journal is not None:
            done = self.record(journal.job_id)
            if done is None and journal.step in PRE_SWAP_STEPS:
                pass  # `current` was never touched; the update service resumes the job
            elif done is None:
                if self._target("current") != journal.previous:
                    self.rollback(journal.previous)
                rec = JobRecord(
                    journal.job_id,
                    journal.version,
                    "FAILED",
                    f"probation: interrupted, the agent restarted during step {journal.step}",
                )
                self.finish(rec)
                metrics.BUNDLE_EVENTS.labels(event="recovered").inc()
                log.warning("bundle_install_interrupted", job_id=journal.job_id, step=journal.step)
            else:
                self._end()
        self._sweep_incoming()
        self.collect()
        return rec

    def _sweep_incoming(self) -> None:
        """Drop downloads of jobs that ended or never got a journal (disk is bounded)."""
        journal = self.journal()
        keep = {journal.job_id, f"{journal.job_id}.job.json"} if journal is not None else set()
        for path in (self.root / "incoming").iterdir():
            if path.name in keep:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def collect(self) -> None:
        """Keep only the bundles `current` and `previous` name (disk is bounded)."""
        keep = {self._target("current"), self._target("previous")}
        for path in self.root.glob("v*"):
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def clear_incoming(self, job_id: str) -> None:
        """Drop a job's downloads once it ended."""
        shutil.rmtree(self.root / "incoming" / job_id, ignore_errors=True)


def active_bundle(state_dir: Path, keys: TrustedKeys | None = None) -> Bundle | None:
    """The verified `current` bundle after crash recovery, else None (use the packaged default).

    With `keys`, the signature is checked again too (expiry and version are not: a running
    bundle does not stop at its expiry).
    """
    store = BundleStore(state_dir)
    store.recover()
    return store.current(keys)


def verify_dir(
    path: Path, keys: TrustedKeys, store: BundleStore, model_input: dict[str, Any] | None
) -> Bundle:
    """Verify a downloaded bundle against this store's highest accepted version."""
    return verify_bundle(path, keys, highest=store.highest, model_input=model_input)
