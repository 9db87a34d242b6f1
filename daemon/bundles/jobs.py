"""Reading a job message: its id (even from a message too large to parse), its manifest.

Every job the agent can name ends in a reported state, so intake works hard to find a name:
- a message over EDGE_UPDATES__MAX_JOB_BYTES is not parsed; its `job_id` is read from the
  first few KiB only (as a JSON member of the top-level object, as `bundle publish` writes
  it first), else it is named `job-<sha256 of the message, 16 hex>`;
- an id that is not safe as a file name (`../x`, 300 characters) is reported as
  `unsafe-<sha256 of the id, 16 hex>`, with the id itself (shortened) in the reason;
- a manifest goes through the one validator (manifest.decode_manifest) on its raw bytes, so
  a path listed twice is caught before a decoder merges the two entries.
Only a message with no readable id at all is dropped (counted and logged).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import NamedTuple

import msgspec

from edge_agent.daemon.bundles.fetch import Job, check_job
from edge_agent.daemon.bundles.manifest import (
    BundleRejectedError,
    decode_manifest,
    reject_duplicate_keys,
)

JOB_ID = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,128}")
PEEK_BYTES = 4096
_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


class Refusal(NamedTuple):
    """A job that ends REJECTED without running: the reference it is reported under, why."""

    job_id: str
    version: int
    reason: str  # `<code>: <detail>`, as in every job state


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A job with its manifest and inline files left undecoded, to validate them raw."""

    job_id: str
    version: int
    manifest: msgspec.Raw
    url: str | None = None
    inline: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))


class _Head(msgspec.Struct):
    job_id: str
    version: int = 0


def _digest(data: bytes | str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


def job_ref(job_id: str) -> str:
    """The name a job is stored and reported under: its id when safe, else `unsafe-<hash>`."""
    return job_id if JOB_ID.fullmatch(job_id) else f"unsafe-{_digest(job_id)}"


def _shown(job_id: str) -> str:
    return repr(job_id if len(job_id) <= 64 else job_id[:64] + "...")


def peek_job_id(payload: bytes, limit: int = PEEK_BYTES) -> str | None:
    """The top-level `job_id` string, if it is within the first `limit` bytes; else None.

    Members before it are skipped by the JSON decoder itself (so a `"job_id"` inside a string
    or a nested object is never taken for it); one that does not end within the prefix stops
    the search.
    """
    text = payload[:limit].decode("utf-8", "ignore")
    at = len(text) - len(text.lstrip(_WS))
    if not text.startswith("{", at):
        return None
    at += 1
    try:
        while True:
            key, at = _DECODER.raw_decode(text, _skip(text, at))
            at = _skip(text, at)
            if not isinstance(key, str) or not text.startswith(":", at):
                return None
            value, at = _DECODER.raw_decode(text, _skip(text, at + 1))
            if key == "job_id":
                return value if isinstance(value, str) else None
            at = _skip(text, at)
            if not text.startswith(",", at):
                return None
            at += 1
    except ValueError:  # the prefix ends inside a member, or it is not JSON
        return None


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WS:
        at += 1
    return at


def oversize(payload: bytes, limit: int) -> Refusal:
    """The REJECTED state of a job message over `limit` bytes, named without parsing it."""
    job_id = peek_job_id(payload)
    ref = job_ref(job_id) if job_id is not None else f"job-{_digest(payload)}"
    return Refusal(
        ref,
        0,
        f"too_large: job message of {len(payload)} bytes, EDGE_UPDATES__MAX_JOB_BYTES={limit}",
    )


def parse_job(payload: bytes) -> Job | Refusal | None:
    """A job to run; a Refusal to report; None when no id can be read (drop it)."""
    try:
        envelope = msgspec.json.decode(payload, type=_Envelope)
    except msgspec.DecodeError as exc:
        return _unreadable(payload, exc)
    ref = job_ref(envelope.job_id)
    if ref != envelope.job_id:
        return Refusal(
            ref,
            envelope.version,
            f"malformed: job id {_shown(envelope.job_id)} is not a safe name "
            "(1-128 of A-Z a-z 0-9 . _ -, not only dots); reported as this reference",
        )
    try:
        job = _decode(envelope)
        # Two copies of a file or of a field: which one is meant? Neither.
        reject_duplicate_keys(payload, f"job {envelope.job_id}")
        check_job(job)
    except BundleRejectedError as exc:
        return Refusal(ref, envelope.version, str(exc))
    return job


def _unreadable(payload: bytes, exc: msgspec.DecodeError) -> Refusal | None:
    if isinstance(exc, msgspec.ValidationError):  # JSON, but not a job: its id, perhaps
        try:
            head = msgspec.json.decode(payload, type=_Head)
        except msgspec.DecodeError:
            return None
        return Refusal(job_ref(head.job_id), head.version, f"malformed: {exc}")
    job_id = peek_job_id(payload)  # not JSON as a whole, but perhaps a readable start
    if job_id is None:
        return None
    return Refusal(job_ref(job_id), 0, "malformed: the job message is not JSON")


def _decode(envelope: _Envelope) -> Job:
    where = f"job {envelope.job_id}"
    manifest = decode_manifest(bytes(envelope.manifest), f"{where} manifest")
    try:
        inline = msgspec.json.decode(bytes(envelope.inline), type=dict[str, str])
    except msgspec.DecodeError as exc:
        raise BundleRejectedError("malformed", f"{where} inline: {exc}") from exc
    return Job(
        job_id=envelope.job_id,
        version=envelope.version,
        manifest=manifest,
        url=envelope.url,
        inline=inline,
    )
