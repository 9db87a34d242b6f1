"""Downloads: bounded by the manifest's lengths, resumed after an interruption."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.daemon.bundles.bundle import read_manifest
from edge_agent.daemon.bundles.fetch import DownloadError, Job, fetch
from edge_agent.daemon.bundles.manifest import BundleRejectedError, check_size
from tests.bundle_kit import make_bundle
from tests.bundle_server import RangeFiles, serving

MODEL = "model/model.onnx"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    make_bundle(tmp_path / "src", Ed25519PrivateKey.generate(), 1)
    return tmp_path / "src"


def _job(source: Path, url: str) -> Job:
    manifest = read_manifest(source)
    return Job(job_id="j", version=manifest.version, manifest=manifest, url=url)


def test_file_url_places_every_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    fetch(_job(source, source.as_uri()), dest, 10)
    for name in read_manifest(source).files:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert (dest / "manifest.json").exists()


def test_partial_file_is_continued_not_restarted(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    whole = (source / MODEL).read_bytes()
    (dest / "model").mkdir(parents=True)
    (dest / MODEL).write_bytes(whole[:100])
    fetch(_job(source, source.as_uri()), dest, 10)
    assert (dest / MODEL).read_bytes() == whole
    # Proof that the prefix on disk was kept: a wrong prefix survives into a hash mismatch.
    (dest / MODEL).write_bytes(b"\xff" * 100)
    with pytest.raises(BundleRejectedError) as info:
        fetch(_job(source, source.as_uri()), dest, 10)
    assert info.value.reason == "hash_mismatch"
    assert not (dest / MODEL).exists()  # so that the next attempt starts clean


def test_source_longer_than_manifest_is_cut_off(source: Path, tmp_path: Path) -> None:
    job = _job(source, source.as_uri())
    with (source / MODEL).open("ab") as f:
        f.write(b"x" * 1_000_000)
    dest = tmp_path / "dest"
    with pytest.raises(BundleRejectedError) as info:
        fetch(job, dest, 10)
    assert info.value.reason == "length_mismatch"
    assert (dest / MODEL).stat().st_size == 0  # never more than the manifest allows on disk


def test_source_shorter_than_manifest(source: Path, tmp_path: Path) -> None:
    job = _job(source, source.as_uri())
    data = (source / MODEL).read_bytes()
    (source / MODEL).write_bytes(data[:-1])
    with pytest.raises(BundleRejectedError) as info:
        fetch(job, tmp_path / "dest", 10)
    assert info.value.reason == "length_mismatch"


def test_missing_source_file(source: Path, tmp_path: Path) -> None:
    job = _job(source, source.as_uri())
    (source / "golden.json").unlink()
    with pytest.raises(BundleRejectedError) as info:
        fetch(job, tmp_path / "dest", 10)
    assert info.value.reason == "missing_file"


class _Flaky(RangeFiles):
    """The first request of each file dies halfway."""

    cut: ClassVar[set[str]]

    def send_body(self, body: bytes) -> None:
        if self.path not in self.cut:
            self.cut.add(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the uplink drops mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def flaky_server(source: Path) -> Iterator[tuple[str, type[_Flaky]]]:
    with serving(_Flaky, source, cut=set()) as served:
        yield served


def test_http_download_resumes_with_a_range(
    source: Path, tmp_path: Path, flaky_server: tuple[str, type[_Flaky]]
) -> None:
    url, handler = flaky_server
    dest = tmp_path / "dest"
    job = _job(source, url)
    with pytest.raises(DownloadError):
        fetch(job, dest, 10)
    got = (dest / "golden.json").stat().st_size  # the first file, cut halfway
    assert 0 < got < (source / "golden.json").stat().st_size
    # Each later attempt gets one more file further; none starts a file over.
    for _ in range(len(read_manifest(source).files)):
        try:
            fetch(job, dest, 10)
            break
        except DownloadError:
            continue
    for name in read_manifest(source).files:
        assert (dest / name).read_bytes() == (source / name).read_bytes()
    assert f"bytes={got}-" in handler.ranges


def test_bundle_over_the_size_limit_is_refused_before_download(source: Path) -> None:
    job = _job(source, source.as_uri())
    total = sum(e.length for e in job.manifest.files.values())
    check_size(job.manifest, total)  # exactly at the limit is fine
    with pytest.raises(BundleRejectedError) as info:
        check_size(job.manifest, total - 1)
    assert info.value.reason == "too_large"
    assert "EDGE_UPDATES__MAX_BUNDLE_BYTES" in str(info.value)


def test_file_source_refuses_a_linked_file(source: Path, tmp_path: Path) -> None:
    job = _job(source, source.as_uri())
    pack = source / "rules" / "pump.yaml"
    outside = tmp_path / "outside.yaml"
    outside.write_bytes(pack.read_bytes())  # the same bytes: only the link is at fault
    pack.unlink()
    pack.symlink_to(outside)
    with pytest.raises(BundleRejectedError) as info:
        fetch(job, tmp_path / "dest", 10)
    assert info.value.reason == "unsafe_path"
    assert info.value.detail.startswith("rules/pump.yaml")


def test_file_source_refuses_a_linked_folder(source: Path, tmp_path: Path) -> None:
    job = _job(source, source.as_uri())
    (source / "rules").rename(tmp_path / "real-rules")
    (source / "rules").symlink_to(tmp_path / "real-rules")
    with pytest.raises(BundleRejectedError) as info:
        fetch(job, tmp_path / "dest", 10)
    assert info.value.reason == "unsafe_path"


def test_file_source_base_may_be_a_link(source: Path, tmp_path: Path) -> None:
    """The operator's base path (e.g. /srv/bundles -> /data/bundles) is theirs to choose."""
    (tmp_path / "base").symlink_to(source)
    dest = tmp_path / "dest"
    fetch(_job(source, (tmp_path / "base").as_uri()), dest, 10)
    assert (dest / MODEL).read_bytes() == (source / MODEL).read_bytes()
