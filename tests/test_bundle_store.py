"""Staging, the atomic `current` swap, rollback, the highest-version record and recovery."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.core.errors import BundleError
from edge_agent.daemon.bundles.bundle import TrustedKeys, verify_bundle
from edge_agent.daemon.bundles.manifest import BundleRejectedError
from edge_agent.daemon.bundles.store import BundleStore, JobRecord, active_bundle
from edge_agent.daemon.bundles.updates import bundle_settings
from edge_agent.daemon.settings import Settings
from tests.bundle_kit import MODEL_INPUT, make_bundle


def _install(store: BundleStore, src: Path, keys: TrustedKeys) -> Path:
    bundle = verify_bundle(src, keys, highest=store.highest, model_input=MODEL_INPUT)
    staged = store.stage(src, bundle.manifest)
    store.swap(staged, bundle.version)
    return staged


def test_stage_swap_and_rollback(tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys) -> None:
    state = tmp_path / "state"
    make_bundle(tmp_path / "one", key, 1, tag="one")
    make_bundle(tmp_path / "two", key, 2, tag="two")
    store = BundleStore(state)
    assert active_bundle(state) is None
    _install(store, tmp_path / "one", keys)
    _install(store, tmp_path / "two", keys)
    current = active_bundle(state, keys)
    assert current is not None
    assert current.version == 2
    assert current.path == state / "bundles" / "v00000002"
    assert (current.path / "rules" / "pump.yaml").read_text().endswith("# two\n")
    store.rollback("v00000001")
    back = active_bundle(state)
    assert back is not None
    assert back.version == 1
    # Rolling back never lowers the record: version 2 stays refused.
    assert BundleStore(state).highest == 2


def test_highest_survives_a_restart(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    state = tmp_path / "state"
    make_bundle(tmp_path / "five", key, 5)
    make_bundle(tmp_path / "four", key, 4)
    _install(BundleStore(state), tmp_path / "five", keys)
    restarted = BundleStore(state)  # a new process over the same state directory
    assert restarted.highest == 5
    with pytest.raises(BundleRejectedError) as info:
        _install(restarted, tmp_path / "five", keys)
    assert info.value.reason == "old_version"
    with pytest.raises(BundleRejectedError) as info:
        _install(restarted, tmp_path / "four", keys)
    assert info.value.reason == "old_version"


def test_damaged_highest_record_is_an_error_not_zero(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    (store.root / "highest").write_text("garbage")
    with pytest.raises(Exception, match="not a version number"):
        _ = store.highest


def test_damaged_current_is_not_served(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    state = tmp_path / "state"
    make_bundle(tmp_path / "one", key, 1)
    staged = _install(BundleStore(state), tmp_path / "one", keys)
    (staged / "golden.json").write_text("tampered")
    assert active_bundle(state) is None


def test_recovery_after_swap_rolls_back_and_records_failed(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    state = tmp_path / "state"
    make_bundle(tmp_path / "one", key, 1, tag="one")
    make_bundle(tmp_path / "two", key, 2, tag="two")
    store = BundleStore(state)
    _install(store, tmp_path / "one", keys)
    store.begin("job-2", 2, "probation")
    _install(store, tmp_path / "two", keys)
    # ...and the process dies during probation.
    rec = BundleStore(state).recover()
    assert rec is not None
    assert rec.status == "FAILED"
    assert "probation" in rec.reason
    current = active_bundle(state)
    assert current is not None
    assert current.version == 1
    assert BundleStore(state).record("job-2") == rec
    assert BundleStore(state).journal() is None


def test_recovery_before_swap_leaves_the_job_to_resume(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    state = tmp_path / "state"
    make_bundle(tmp_path / "one", key, 1)
    store = BundleStore(state)
    _install(store, tmp_path / "one", keys)
    store.begin("job-2", 2, "downloading")
    (store.root / ".stage-2-dead").mkdir()
    restarted = BundleStore(state)
    assert restarted.recover() is None
    journal = restarted.journal()
    assert journal is not None
    assert journal.step == "downloading"
    assert journal.previous == "v00000001"
    assert not (store.root / ".stage-2-dead").exists()


def test_job_records_are_bounded_and_marked_reported(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    store.finish(JobRecord("a", 1, "SUCCEEDED"))
    assert [r.job_id for r in store.unreported()] == ["a"]
    rec = store.record("a")
    assert rec is not None
    store.mark_reported(rec)
    assert store.unreported() == []
    for bad in ("../escape", "..", "a/b", "x" * 129, ""):
        with pytest.raises(BundleError, match="job id"):
            store.record(bad)


def test_recovery_sweeps_downloads_of_ended_jobs(tmp_path: Path) -> None:
    store = BundleStore(tmp_path)
    store.incoming("old-job")
    (store.root / "incoming" / "old-job.job.json").write_text("{}")
    store.begin("live-job", 3, "downloading")
    store.incoming("live-job")
    store.recover()
    assert sorted(p.name for p in (store.root / "incoming").iterdir()) == ["live-job"]


def test_bundle_settings_point_into_the_bundle(
    tmp_path: Path, key: Ed25519PrivateKey, keys: TrustedKeys
) -> None:
    make_bundle(tmp_path / "one", key, 1)
    _install(BundleStore(tmp_path / "state"), tmp_path / "one", keys)
    bundle = active_bundle(tmp_path / "state")
    assert bundle is not None
    settings = bundle_settings(Settings(), bundle)
    assert settings.model.manifest == bundle.path / "model" / "manifest.json"
    assert settings.rules.packs == [bundle.path / "rules" / "pump.yaml"]
    assert bundle_settings(Settings(), None) == Settings()
