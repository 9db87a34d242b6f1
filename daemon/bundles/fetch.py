"""Getting a bundle's files onto the gateway: inline (base64 in the job) or from a URL.

Every read is bounded by the manifest's length for that file, and a partial file left by an
interrupted download is continued from where it stopped (file:// seeks, http(s) asks for a
Range), so a flaky uplink or a restart does not start a large model over.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

import msgspec

from edge_agent.core.errors import BundleError
from edge_agent.daemon.bundles.bundle import (
    MANIFEST,
    BundleManifest,
    BundleRejectedError,
    check_path,
    encode_manifest,
    file_digest,
)

_CHUNK = 1 << 16
SCHEMES = ("file", "http", "https")


class Job(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One update job as it arrives on a job topic."""

    job_id: str
    version: int
    manifest: BundleManifest
    url: str | None = None  # base URL; each file is fetched from url + "/" + its path
    inline: dict[str, str] = msgspec.field(default_factory=dict)  # path -> base64 bytes


class DownloadError(BundleError):
    """A source could not be read (worth retrying); carries what failed."""


def _open_source(url: str, offset: int, timeout_s: float) -> tuple[BinaryIO, int, int | None]:
    """Open `url` at `offset`: the stream, the offset it really starts at, the source's size.

    The size (when the source states it) tells a cut connection (retry) from a source that
    really is shorter than the manifest says (reject).
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        try:
            f = path.open("rb")
        except FileNotFoundError as exc:
            raise BundleRejectedError("missing_file", f"{url} does not exist") from exc
        except OSError as exc:
            raise DownloadError(f"{url}: {exc}") from exc
        f.seek(offset)
        return f, offset, os.fstat(f.fileno()).st_size
    if parts.scheme in ("http", "https"):
        request = urllib.request.Request(url)  # noqa: S310 - scheme checked just above
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise BundleRejectedError("missing_file", f"{url}: HTTP 404") from exc
            raise DownloadError(f"{url}: HTTP {exc.code}") from exc
        except OSError as exc:
            raise DownloadError(f"{url}: {exc}") from exc
        # A server that ignores Range sends the whole file: start over rather than append.
        start = offset if response.status == 206 else 0
        declared = response.length  # bytes of this response, from Content-Length
        return response, start, None if declared is None else start + declared
    raise BundleRejectedError("malformed", f"job url {url!r}: scheme must be one of {SCHEMES}")


def _fetch_one(url: str, dest: Path, length: int, deadline: float) -> None:
    have = dest.stat().st_size if dest.exists() else 0
    if have > length:
        have = 0
    if have == length:
        return
    stream, start, size = _open_source(url, have, max(deadline - time.monotonic(), 1.0))
    with stream, dest.open("r+b" if dest.exists() else "wb") as out:
        out.seek(start)
        out.truncate()
        got = start
        read = getattr(stream, "read1", stream.read)
        while True:
            if time.monotonic() > deadline:
                raise DownloadError(f"{url}: download timed out at byte {got} of {length}")
            try:
                # One byte more than the manifest allows tells "too long" from "exactly right".
                # read1: what has arrived, not a full chunk, so a cut keeps every byte so far.
                chunk = read(min(_CHUNK, length + 1 - got))
            except OSError as exc:
                raise DownloadError(f"{url}: {exc} at byte {got}") from exc
            if not chunk:
                break
            out.write(chunk)
            got += len(chunk)
            if got > length:
                out.truncate(0)
                raise BundleRejectedError("length_mismatch", f"{url}: longer than {length} bytes")
        out.flush()
        os.fsync(out.fileno())
    if got < length and size is not None and got < size:
        # The source has more than arrived: the connection was cut. What arrived is kept.
        raise DownloadError(f"{url}: connection cut at byte {got} of {length}")
    if got < length:
        raise BundleRejectedError("length_mismatch", f"{url}: {got} bytes, manifest says {length}")


def fetch(job: Job, dest: Path, timeout_s: float) -> None:
    """Place every file of the job's manifest (and the manifest) under `dest`.

    Files already complete with the right hash are kept; a file with the wrong hash is
    deleted so the next attempt fetches it again, and the job is rejected.
    """
    deadline = time.monotonic() + timeout_s
    manifest = job.manifest
    for name in job.inline:
        check_path(name)
        if name not in manifest.files:
            raise BundleRejectedError("extra_file", f"inline file {name} is not in the manifest")
    for name, entry in sorted(manifest.files.items()):
        target = dest / check_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in job.inline:
            try:
                data = base64.b64decode(job.inline[name], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BundleRejectedError("malformed", f"inline file {name}: not base64") from exc
            if len(data) != entry.length:
                raise BundleRejectedError(
                    "length_mismatch", f"{name}: {len(data)} bytes, manifest says {entry.length}"
                )
            target.write_bytes(data)
        elif job.url is not None:
            _fetch_one(f"{job.url.rstrip('/')}/{quote(name)}", target, entry.length, deadline)
        else:
            raise BundleRejectedError(
                "missing_file", f"{name}: neither inline nor a url in the job"
            )
        sha, _ = file_digest(target, entry.length)
        if sha != entry.sha256:
            target.unlink()
            raise BundleRejectedError("hash_mismatch", f"{name}: sha256 differs from the manifest")
    (dest / MANIFEST).write_bytes(encode_manifest(manifest))


def check_size(job: Job, limit: int) -> None:
    """Refuse before downloading a bundle larger than the configured limit."""
    total = sum(e.length for e in job.manifest.files.values())
    if total > limit:
        raise BundleRejectedError(
            "too_large", f"{total} bytes in files, EDGE_UPDATES__MAX_BUNDLE_BYTES={limit}"
        )
    if job.version != job.manifest.version:
        raise BundleRejectedError(
            "malformed", f"job version {job.version} != manifest version {job.manifest.version}"
        )
