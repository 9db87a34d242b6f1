"""Reading job messages: ids read even from oversize messages, unsafe ids renamed, raw checks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.fetch import Job
from edge_agent.daemon.bundles.jobs import Refusal, job_ref, oversize, parse_job, peek_job_id
from tests.bundle_kit import make_bundle
from tests.update_kit import job_bytes


@pytest.fixture
def payload(tmp_path: Path) -> bytes:
    make_bundle(tmp_path / "b", Ed25519PrivateKey.generate(), 3)
    return job_bytes(tmp_path / "b", "job-3", inline=True)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('{"job_id": "a"}', "a"),
        ('  {"version": 3, "url": null, "job_id": "b", "inline": {', "b"),  # cut afterwards
        ('{"x": "\\"job_id\\": \\"fake\\"", "job_id": "c"}', "c"),  # not the string's
        ('{"x": {"job_id": "fake"}, "job_id": "d"}', "d"),  # not the nested one's
        ('{"inline": {"a": "' + "A" * 5000 + '"}, "job_id": "e"}', None),  # beyond the prefix
        ('{"job_id": 7}', None),
        ("[1, 2]", None),
        ("not json", None),
    ],
)
def test_peek_reads_only_the_top_level_id(text: str, found: str | None) -> None:
    assert peek_job_id(text.encode()) == found


def test_peek_costs_the_prefix_only(payload: bytes) -> None:
    big = payload + b" " * (64 << 20)  # trailing bytes are never decoded
    assert peek_job_id(big) == "job-3"


def test_oversize_is_named_by_its_id_or_its_hash(payload: bytes) -> None:
    refusal = oversize(payload, 1024)
    assert refusal.job_id == "job-3"
    assert refusal.reason.startswith(f"too_large: job message of {len(payload)} bytes")
    blob = b'{"inline": {"a": "' + b"A" * 10_000 + b'"}, "job_id": "late"}'
    assert oversize(blob, 1024).job_id == f"job-{hashlib.sha256(blob).hexdigest()[:16]}"


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", "..", "x" * 129, "caf\u00e9", "a\x00"])
def test_unsafe_ids_get_a_stable_reference(job_id: str) -> None:
    ref = job_ref(job_id)
    assert ref == f"unsafe-{hashlib.sha256(job_id.encode()).hexdigest()[:16]}"
    assert job_ref(ref) == ref


def test_a_valid_job_parses(payload: bytes) -> None:
    job = parse_job(payload)
    assert isinstance(job, Job)
    assert job.job_id == "job-3"
    assert job.manifest.version == 3


def test_unsafe_id_is_a_refusal_under_the_reference(payload: bytes) -> None:
    bad = payload.replace(b'"job-3"', b'"../../etc/x"', 1)
    refusal = parse_job(bad)
    assert isinstance(refusal, Refusal)
    assert refusal.job_id == job_ref("../../etc/x")
    assert refusal.version == 3
    assert "'../../etc/x' is not a safe name" in refusal.reason


def test_duplicates_anywhere_in_the_job_are_malformed(payload: bytes) -> None:
    doc = json.loads(payload)
    name = next(iter(doc["inline"]))
    twice = payload.replace(b'"inline":{', b'"inline":{"' + name.encode() + b'":"AAAA",', 1)
    refusal = parse_job(twice)
    assert isinstance(refusal, Refusal)
    assert refusal.reason.startswith("malformed:")
    assert name in refusal.reason
    refusal = parse_job(payload.replace(b"{", b'{"version":9,', 1))  # which version is meant?
    assert isinstance(refusal, Refusal)
    assert "'version' is listed twice" in refusal.reason


def test_manifest_rules_apply_to_jobs(payload: bytes) -> None:
    doc = json.loads(payload)
    doc["manifest"]["files"]["model/manifest.json/inner.bin"] = doc["manifest"]["files"][
        "golden.json"
    ]
    refusal = parse_job(json.dumps(doc).encode())
    assert isinstance(refusal, Refusal)
    assert refusal.reason.startswith("malformed: ")
    assert "model/manifest.json/inner.bin" in refusal.reason
    doc = json.loads(payload)
    doc["url"] = "ftp://example/b"
    refusal = parse_job(json.dumps(doc).encode())
    assert isinstance(refusal, Refusal)
    assert "scheme" in refusal.reason


def test_no_readable_id_is_dropped() -> None:
    assert parse_job(b"{not json") is None
    assert parse_job(b'{"version": 2}') is None
    refusal = parse_job(b'{"job_id": "j", "version": 2, "manifest": {"format": 1}}')
    assert isinstance(refusal, Refusal)
    assert refusal.job_id == "j"
    refusal = parse_job(b'{"job_id": "j2", "version": ')  # cut: the id is still readable
    assert isinstance(refusal, Refusal)
    assert refusal.job_id == "j2"
