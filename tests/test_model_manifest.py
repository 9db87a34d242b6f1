"""The model manifest: schema, packaged default, and hash verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_agent.core.errors import ModelError
from edge_agent.models.manifest import (
    default_manifest_path,
    load_manifest,
    sha256_file,
)
from edge_agent.models.training.dataset import CLASSES
from edge_agent.simulator.plant import SIGNALS


def test_packaged_manifest_loads_and_matches_the_contract() -> None:
    m = load_manifest(None)
    assert m.name == "pump-fault"
    assert m.signals == list(SIGNALS)
    assert (m.window, m.hop, m.rate_hz) == (30, 5, 1.0)
    assert m.classes == list(CLASSES)
    assert m.classes[0] == "normal"
    assert m.classes[-1] == "unknown"
    assert m.input.name == "window"
    assert m.input.shape == [None, 30, 5]
    assert m.outputs == {"score": [None], "contrib": [None, 5], "probs": [None, len(CLASSES)]}
    assert m.threshold > 0
    assert all(s > 0 for s in m.normalisation.std)
    path = m.artifact("onnx", "fp32")
    assert path.is_file()
    assert sha256_file(path) == m.artifact_entry("onnx", "fp32").sha256
    assert path.stat().st_size <= 200_000


def _copy(tmp_path: Path) -> Path:
    src = default_manifest_path().parent
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_tampered_file_is_rejected_naming_it(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    load_manifest(d / "manifest.json")  # the untouched copy verifies
    onnx = d / "pump-fault.fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"pump-fault\.fp32\.onnx: sha256"):
        load_manifest(d / "manifest.json")


def test_truncated_file_is_rejected_by_size(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    onnx = d / "pump-fault.fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(ModelError, match="bytes, the manifest says"):
        load_manifest(d / "manifest.json")


def test_missing_file_and_bad_manifest_are_named(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "pump-fault.fp32.onnx").unlink()
    with pytest.raises(ModelError, match=r"pump-fault\.fp32\.onnx: cannot read"):
        load_manifest(d / "manifest.json")
    raw = json.loads((d / "manifest.json").read_text())
    raw["window"] = "thirty"
    (d / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="window"):
        load_manifest(d / "manifest.json")
    with pytest.raises(ModelError, match=r"EDGE_MODEL__MANIFEST=.*nope\.json"):
        load_manifest(d / "nope.json")


def test_unknown_artifact_is_a_model_error() -> None:
    m = load_manifest(None)
    with pytest.raises(ModelError, match="no onnx/int4 artifact"):
        m.artifact("onnx", "int4")
