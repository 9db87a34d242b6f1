"""Getting a bundle's files onto the gateway: inline (base64 in the job) or from a URL.

Every read is bounded by the manifest's length for that file, and a partial file left by an
interrupted download is continued from where it stopped (file:// seeks, http(s) asks for a
Range), so a flaky uplink or a restart does not start a large model over. A file:// source
is read as `bundle verify` reads a directory: a link anywhere below the base is refused.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
import time
import urllib.request
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

import msgspec

from edge_agent.core.errors import BundleError
from edge_agent.daemon.bundles.bundle import file_digest
from edge_agent.daemon.bundles.manifest import (
    MANIFEST,
    BundleManifest,
    BundleRejectedError,
    check_path,
    encode_manifest,
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


def _open_below(base: Path, name: str) -> BinaryIO:
    """Open `base/name` for reading without following a link at or below `base`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    *dirs, leaf = name.split("/")
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)  # the operator's base may be a link
    except FileNotFoundError as exc:
        raise BundleRejectedError("missing_file", f"{base} does not exist") from exc
    except OSError as exc:
        raise DownloadError(f"{base}: {exc}") from exc
    try:
        for part in dirs:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf_fd = os.open(leaf, flags, dir_fd=fd)
    except FileNotFoundError as exc:
        raise BundleRejectedError("missing_file", f"{name} does not exist in {base}") from exc
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a link, or a link where a folder was
            raise BundleRejectedError("unsafe_path", f"{name} in {base} is a link") from exc
        raise DownloadError(f"{base}/{name}: {exc}") from exc
    finally:
        os.close(fd)
    f = os.fdopen(leaf_fd, "rb")
    if not stat.S_ISREG(os.fstat(leaf_fd).st_mode):
        f.close()
        raise BundleRejectedError("unsafe_path", f"{name} in {base} is not a regular file")
    return f


def _open_source(
    base_url: str, name: str, offset: int, timeout_s: float
) -> tuple[BinaryIO, int, int | None]:
    """Open file `name` under `base_url` at `offset`: the stream, where it starts, its size.

    The size (when the source states it) tells a cut connection (retry) from a source that
    really is shorter than the manifest says (reject).
    """
    parts = urlsplit(base_url)
    if parts.scheme == "file":
        f = _open_below(Path(unquote(parts.path)), name)
        f.seek(offset)
        return f, offset, os.fstat(f.fileno()).st_size
    url = f"{base_url.rstrip('/')}/{quote(name)}"
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
    raise BundleRejectedError("malformed", f"job url {base_url!r}: scheme must be one of {SCHEMES}")


def _fetch_one(base_url: str, name: str, dest: Path, length: int, deadline: float) -> None:
    have = dest.stat().st_size if dest.exists() else 0
    if have > length:
        have = 0
    if have == length:
        return
    timeout_s = max(deadline - time.monotonic(), 1.0)
    stream, start, size = _open_source(base_url, name, have, timeout_s)
    url = f"{base_url.rstrip('/')}/{name}"
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
            _fetch_one(job.url, name, target, entry.length, deadline)
        else:
            raise BundleRejectedError(
                "missing_file", f"{name}: neither inline nor a url in the job"
            )
        sha, _ = file_digest(target, entry.length)
        if sha != entry.sha256:
            target.unlink()
            raise BundleRejectedError("hash_mismatch", f"{name}: sha256 differs from the manifest")
    (dest / MANIFEST).write_bytes(encode_manifest(manifest))


def check_job(job: Job) -> None:
    """What a job must state besides its manifest: the same version, a source we can read."""
    if job.version != job.manifest.version:
        raise BundleRejectedError(
            "malformed", f"job version {job.version} != manifest version {job.manifest.version}"
        )
    if job.url is not None and urlsplit(job.url).scheme not in SCHEMES:
        raise BundleRejectedError("malformed", f"job url {job.url!r}: scheme not one of {SCHEMES}")
