"""The evidence store's disk work on one thread, off the event loop.

Writing a record means write, fsync and rename; on a gateway's SD card or eMMC an fsync takes
10-100 ms and more while the disk is busy, and on the event loop that stalls ingest, scoring
and the outbox. `Writer` runs the writes, and the removals of evicted or expired files, on
one thread in the order they were asked for, so the operations on one file keep their order.

The rules it keeps:
- A file is written to `.<stem>.tmp`, synced, then renamed: a crash leaves the whole file or
  a `.tmp` that the store removes when it opens.
- Until a write is done its bytes stay readable (`image`), and a failed one stays so until
  its outcome is collected (`done`, which the store calls before every write, so the list of
  outcomes holds at most what finished since): nobody sees a missing or half-written file.
- Bounded: at most `max_bytes` of images wait (one image larger than that waits alone).
  `write` waits for room up to `wait_s` (the disk sets the pace, as when the loop wrote),
  then refuses; the caller counts and logs both. Removals carry no bytes and are bounded by
  the files the store holds.
- `close` waits for the queue up to a bound; what is not on disk by then is dropped and
  named. The thread is a daemon: a disk that never answers cannot hold the process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_fsync = os.fsync  # tests hold it to make a write slow without faking the file system
_IDLE_S = 30.0  # an idle thread ends (a store that is never closed leaves none behind)


class Writer:
    """One thread writing (write, fsync, rename) and removing files in the order given."""

    def __init__(self, name: str, max_bytes: int, wait_s: float) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.wait_s = wait_s
        self._cv = threading.Condition()
        self._jobs: deque[tuple[str, Path, bytes | None]] = deque()  # key, path, image|unlink
        self._images: dict[str, bytes] = {}  # keys not on disk yet (or failed, uncollected)
        self._done: list[tuple[str, str | None]] = []  # key, error
        self._queued = 0  # bytes of the images in `_jobs`
        self._thread: threading.Thread | None = None
        self._stopping = False

    def write(self, key: str, path: Path, image: bytes) -> float | None:
        """Queue a file; the seconds waited for room (0.0: none needed; None: none in time)."""
        start = time.monotonic()
        with self._cv:
            waited = not self._room(len(image))
            if waited and not self._cv.wait_for(lambda: self._room(len(image)), self.wait_s):
                return None
            self._images[key] = image
            self._queued += len(image)
            self._submit((key, path, image))
        return time.monotonic() - start if waited else 0.0

    def unlink(self, path: Path) -> None:
        """Queue the removal of a file (after every write queued before it)."""
        with self._cv:
            self._submit(("", path, None))

    def image(self, key: str) -> bytes | None:
        """The bytes of a file not on disk yet, or None once it is (or was never queued)."""
        with self._cv:
            return self._images.get(key)

    def done(self) -> list[tuple[str, str | None]]:
        """Writes finished since the last call: key and error (None when on disk)."""
        with self._cv:
            out, self._done = self._done, []
            for key, error in out:
                if error is not None:
                    self._images.pop(key, None)
            return out

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is done; False when `timeout_s` passed first."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs, timeout_s)

    def close(self, timeout_s: float) -> list[str]:
        """Finish the queue within `timeout_s`, then stop; the keys of writes not on disk.

        Past the bound, the write in progress goes on (it may still land, whole, and be read
        at the next start) and the rest are dropped.
        """
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            if self._cv.wait_for(lambda: not self._jobs, timeout_s):
                return []
            current = self._jobs.popleft()
            left = [key for key, _, image in (current, *self._jobs) if image is not None]
            self._jobs.clear()
            self._jobs.append(current)  # the thread takes it off when it is done
            self._queued = len(current[2] or b"")
            for key in left:
                self._images.pop(key, None)
            return left

    def _room(self, size: int) -> bool:
        return self._queued == 0 or self._queued + size <= self.max_bytes

    def _submit(self, job: tuple[str, Path, bytes | None]) -> None:
        """Queue a job (the lock held) and have a thread on it."""
        self._jobs.append(job)
        self._stopping = False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._cv.notify_all()

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._jobs) or self._stopping, _IDLE_S)
                if not self._jobs:  # stopped, or idle: the next job starts a thread again
                    self._thread = None
                    return
                key, path, image = self._jobs[0]
            if image is None:
                # The store no longer counts it: say so loudly if the disk still holds it.
                remove_file(path, "evidence_unlink_failed")
            error = None if image is None else _write(path, image)
            with self._cv:
                self._jobs.popleft()  # still this job: `close` keeps the one in progress
                if image is not None:
                    self._queued -= len(image)
                    if key in self._images:  # not dropped by `close`
                        if error is None:
                            del self._images[key]
                        self._done.append((key, error))
                self._cv.notify_all()


def _write(path: Path, image: bytes) -> str | None:
    """Write, sync and rename one file; the error, or None when it is on disk."""
    tmp = path.with_name(f".{path.stem}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(image)
            f.flush()
            _fsync(f.fileno())
        tmp.replace(path)
    except Exception as exc:  # noqa: BLE001 - any failure is this record's, never the thread's
        remove_file(tmp)  # on a read-only or failing disk this fails too: never past here
        return f"cannot write {path}: {exc}"
    return None


def remove_file(path: Path, event: str = "evidence_file_not_removed") -> None:
    """Remove a file if it is there; a failure (read-only disk) is logged, never raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error(event, path=str(path), error=str(exc))  # noqa: TRY400 - no traceback needed
