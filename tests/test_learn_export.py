"""Learned model files: manifest, scoring through the real Scorer, byte-identical re-fits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.core.errors import ModelError
from edge_agent.models.learn import export
from edge_agent.models.learn.fit import FitOptions
from edge_agent.models.learn.job import Output, Result, fit_rows
from edge_agent.models.manifest import MANIFEST_FILE, load_manifest
from edge_agent.models.scorer import Scorer

SIGNALS = ["vib", "current", "pressure", "temp", "flow", "speed"]
ROLES = ["vibration", "current", "pressure", "temperature", "flow", "speed"]
UNITS = ["mm/s", "A", "bar", "degC", "m3/h", "rpm"]
LEVEL = np.array([2.0, 12.0, 3.0, 45.0, 80.0, 1480.0])
NOISE = np.array([0.05, 0.2, 0.02, 0.1, 0.6, 2.0])


OPTS = FitOptions(units=dict(zip(SIGNALS, UNITS, strict=True)), seed=7)
OFF = Output(tflite="off")


def rows(n: int, seed: int = 0) -> np.ndarray:
    return LEVEL + NOISE * np.random.default_rng(seed).standard_normal((n, len(LEVEL)))


def windows(x: np.ndarray, w: int = 15) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(x, (w, x.shape[1]))[:, 0]
    return np.ascontiguousarray(view, np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Result:
    out = tmp_path_factory.mktemp("learned")
    return fit_rows(rows(900), SIGNALS, ROLES, out, OPTS, output=OFF)


def _faulty() -> np.ndarray:
    x = rows(400, seed=1)
    x[150:250, 0] *= 1.3  # vibration up 30 %
    x[250:350, 4] -= 6.0  # flow down
    return x


def test_the_manifest_describes_a_learned_model(model: Result) -> None:
    m = load_manifest(model.manifest_path)
    assert m.kind == "learned"
    assert m.signals == SIGNALS
    assert m.roles == ROLES
    assert m.units == UNITS
    assert m.adapt is not None
    assert (m.adapt.alpha, m.adapt.below) == (0.002, 0.8)
    assert (m.window, m.hop, m.rate_hz, m.threshold) == (15, 1, 1.0, 1.0)
    assert m.classes == ["normal", "unknown"]
    assert m.input.shape == [None, 15, 6]
    assert m.outputs == {"score": [None], "contrib": [None, 6], "probs": [None, 2]}
    assert m.training.seeds == {"seed": 7}
    assert m.description is not None
    assert "no weights" in m.description
    assert "int8 files equal fp32" in m.description
    assert {(a.format, a.precision) for a in m.artifacts} == {("onnx", "fp32"), ("onnx", "int8")}
    for art in m.artifacts:
        assert art.bytes == (m.directory / art.file).stat().st_size <= 100_000
    np.testing.assert_allclose(m.normalisation.mean, model.fitted.mean, rtol=1e-6)
    np.testing.assert_allclose(m.normalisation.std, model.fitted.std, rtol=1e-6)
    assert min(m.normalisation.std) > 0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_onnx_model_scores_like_the_numpy_reference(model: Result, precision: str) -> None:
    scorer = Scorer(model.manifest, onnx_providers=("CPUExecutionProvider",), precision=precision)
    x = windows(_faulty())
    out = scorer.score(x)
    score, contrib = model.fitted.reference(x)
    np.testing.assert_allclose(out.score, score, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(out.contrib, contrib, atol=1e-4, rtol=1e-5)
    u = np.minimum(score, 1.0)
    np.testing.assert_allclose(out.probs, np.stack([1 - u, u], axis=1), atol=1e-4)
    assert scorer.threshold == 1.0
    # Healthy windows stay under the threshold, the faults go over it, each led by its signal.
    assert out.score[:130].max() < 1.0
    lead = np.abs(out.contrib).argmax(axis=1)
    assert out.score[200] > 1.0
    assert lead[200] == 0
    assert out.contrib[200, 0] > 0  # vibration above normal
    assert out.score[300] > 1.0
    assert lead[300] == 4
    assert out.contrib[300, 4] < 0  # flow below normal


def test_refitting_the_same_rows_writes_byte_identical_files(model: Result, tmp_path: Path) -> None:
    again = fit_rows(rows(900), SIGNALS, ROLES, tmp_path, OPTS, output=OFF)
    first = model.manifest.directory
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.manifest.directory.iterdir())
    assert MANIFEST_FILE in names
    for name in names:
        assert (first / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_writing_again_into_the_same_directory_replaces_the_files(model: Result) -> None:
    out = model.manifest.directory
    other = fit_rows(rows(600, seed=4), SIGNALS, ROLES, out, OPTS, output=OFF)
    assert load_manifest(out / MANIFEST_FILE).normalisation == other.manifest.normalisation
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left
    fit_rows(rows(900), SIGNALS, ROLES, out, OPTS, output=OFF)  # as before


def test_a_learned_manifest_must_hold_roles_and_a_positive_std(
    model: Result, tmp_path: Path
) -> None:
    raw = json.loads(model.manifest_path.read_text())
    for art in raw["artifacts"]:
        (tmp_path / art["file"]).write_bytes((model.manifest.directory / art["file"]).read_bytes())
    cases: dict[str, dict[str, Any]] = {
        "a learned model needs `roles` and `adapt`": {"roles": None},
        "roles has 2 entries for 6 signals": {"roles": ["flow", "flow"]},
        "every std above zero": {"normalisation": {"mean": [0] * 6, "std": [1, 1, 0, 1, 1, 1]}},
    }
    for says, change in cases.items():
        edited = {k: v for k, v in {**raw, **change}.items() if v is not None}
        (tmp_path / MANIFEST_FILE).write_text(json.dumps(edited))
        with pytest.raises(ModelError, match=says):
            load_manifest(tmp_path / MANIFEST_FILE)


def test_a_model_name_that_cannot_name_files_is_refused(model: Result, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model name 'pump/1'"):
        export.write(model.fitted, tmp_path, name="pump/1")


def test_the_shipped_manifest_is_still_a_classifier() -> None:
    m = load_manifest(None)
    assert m.kind == "classifier"
    assert m.roles is None
    assert m.adapt is None


def test_the_graph_is_the_same_for_every_fit_of_one_shape() -> None:
    # Nothing fitted lives in the graph: the manifest's normalisation holds it all.
    assert export.onnx_graph(15, 6) == export.onnx_graph(15, 6)
    assert len(export.onnx_graph(15, 16)) < 1000


def test_tflite_files_score_like_the_reference_on_litert(tmp_path: Path) -> None:
    # No TensorFlow needed: the files are the shipped template (tests/test_learn_tflite.py).
    result = fit_rows(rows(900), SIGNALS, ROLES, tmp_path, OPTS, output=Output(tflite="on"))
    x = windows(_faulty())
    score, contrib = result.fitted.reference(x)
    for precision in ("fp32", "int8"):
        art = result.manifest.artifact_entry("tflite", precision)
        assert art.bytes <= 100_000
        scorer = Scorer(result.manifest, backends=("litert",), precision=precision)
        assert scorer.backend_name == "litert:cpu"
        out = scorer.score(x)
        np.testing.assert_allclose(out.score, score, atol=1e-4, rtol=1e-5)
        np.testing.assert_allclose(out.contrib, contrib, atol=1e-4, rtol=1e-5)
