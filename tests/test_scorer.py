"""The scorer on the committed ONNX model: shapes, normal vs faults, explanations, fallback."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from edge_agent.core import metrics
from edge_agent.core.errors import ModelError
from edge_agent.models import base
from edge_agent.models.base import BackendOptions, ModelOutput
from edge_agent.models.manifest import Manifest, load_manifest
from edge_agent.models.onnx import OnnxBackend
from edge_agent.models.scorer import Scorer
from edge_agent.models.training.dataset import cut
from edge_agent.simulator.plant import FaultSpec, simulate
from edge_agent.simulator.scenarios import EVAL_SEED0, Scenario, fault_set, normal_set


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(None)


@pytest.fixture(scope="module")
def scorer(manifest: Manifest) -> Scorer:
    return Scorer(manifest, onnx_providers=("CPUExecutionProvider",))


def test_output_shapes_and_ranges(scorer: Scorer) -> None:
    trace = simulate("s1", 1, 900)
    x, _ = cut(trace.values, 30, 5)
    out = scorer.score(x)
    n = x.shape[0]
    assert out.score.shape == (n,)
    assert out.score.dtype == np.float32
    assert out.contrib.shape == (n, 5)
    assert out.contrib.dtype == np.float32
    assert out.probs.shape == (n, 8)
    assert out.probs.dtype == np.float32
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-5)
    # The score is the largest |contrib|.
    np.testing.assert_allclose(out.score, np.abs(out.contrib).max(axis=1), rtol=1e-6)
    assert scorer.backend_name == "onnx:CPUExecutionProvider"
    assert scorer.score(x[:0]).probs.shape == (0, 8)


def test_batches_give_the_same_answer(manifest: Manifest, scorer: Scorer) -> None:
    x, _ = cut(simulate("s2", 2, 1200).values, 30, 5)
    small = Scorer(manifest, onnx_providers=("CPUExecutionProvider",), max_batch=7)
    a, b = scorer.score(x), small.score(x)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


def test_wrong_window_shape_is_a_model_error(scorer: Scorer) -> None:
    with pytest.raises(ModelError, match=r"do not fit the model's \[N, 30, 5\]"):
        scorer.score(np.zeros((2, 20, 5), np.float32))


def test_normal_operation_stays_below_threshold(scorer: Scorer) -> None:
    (sc,) = normal_set(EVAL_SEED0 + 50, 1, 6.0)
    x, _ = cut(sc.run().values, 30, 5)
    out = scorer.score(x)
    assert out.score.max() < scorer.threshold
    assert np.mean(out.probs.argmax(axis=1) == 0) > 0.99


_FAULTS = {s.name: s for s in fault_set(EVAL_SEED0, 3)}
CASES = [
    "bearing_wear-9100",
    "cavitation-9200",
    "misalignment-9300",
    "overheating-9400",
    "stuck_sensor-temperature-9500",
    "stuck_sensor-current-9502",
    "drifting_sensor-current-9602",
]


@pytest.mark.parametrize("name", CASES)
def test_fault_is_detected_explained_and_classified(scorer: Scorer, name: str) -> None:
    sc: Scenario = _FAULTS[name]
    assert sc.fault is not None
    trace = sc.run()
    x, end = cut(trace.values, 30, 5)
    out = scorer.score(x)
    before = end < sc.fault.onset_s
    assert out.score[before].max() < scorer.threshold, "false alarm before onset"
    hits = np.flatnonzero((out.score > scorer.threshold) & ~before)
    assert hits.size > 0, "fault never detected"
    first = hits[:3]
    top = np.abs(out.contrib[first]).mean(axis=0).argmax()
    assert scorer.manifest.signals[int(top)] == trace.signature
    probs = out.probs[first].mean(axis=0)
    assert scorer.manifest.classes[int(probs[1:].argmax()) + 1] == sc.fault.kind


class Flaky:
    """Test double behind the Backend protocol: real ONNX, but raises from the n-th call."""

    def __init__(self, manifest: Manifest, fail_from: int) -> None:
        self.inner = OnnxBackend(manifest.artifact("onnx"), ("CPUExecutionProvider",))
        self.name = "flaky"
        self.calls = 0
        self.fail_from = fail_from

    def run(self, x: np.ndarray) -> ModelOutput:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise RuntimeError("device lost")
        return self.inner.run(x)


@pytest.fixture
def flaky_registered() -> Iterator[None]:
    base.register("flaky")(lambda m, _o: Flaky(m, fail_from=3))
    yield
    base._REGISTRY.pop("flaky")


@pytest.mark.usefixtures("flaky_registered")
def test_backend_failing_mid_run_hands_over_without_losing_windows(
    manifest: Manifest, scorer: Scorer
) -> None:
    x, _ = cut(simulate("s3", 3, 2000, fault=FaultSpec("overheating", 1000.0)).values, 30, 5)
    chain = Scorer(
        manifest, backends=("flaky", "onnx"), onnx_providers=("CPUExecutionProvider",), max_batch=16
    )
    assert chain.backend_name == "flaky"
    before = metrics.BACKEND_FAILURES.labels(backend="flaky", stage="run")._value.get()
    out = chain.score(x)  # batches 3.. fail on flaky and are re-scored on ONNX
    assert chain.backend_name == "onnx:CPUExecutionProvider"
    assert metrics.BACKEND_FAILURES.labels(backend="flaky", stage="run")._value.get() == before + 1
    assert metrics.BACKEND.labels(backend="onnx:CPUExecutionProvider")._value.get() == 1
    assert metrics.BACKEND.labels(backend="flaky")._value.get() == 0
    ref = scorer.score(x)
    assert out.score.shape == ref.score.shape
    np.testing.assert_allclose(out.score, ref.score, rtol=1e-5, atol=1e-5)


def test_no_backend_left_is_a_model_error(manifest: Manifest) -> None:
    with pytest.raises(ModelError, match="unknown backend 'tpu9000'"):
        base.create("tpu9000", manifest, BackendOptions())
    with pytest.raises(ModelError, match="no backend left"):
        Scorer(manifest, backends=("tpu9000",))


def test_missing_onnx_provider_falls_back_to_cpu(manifest: Manifest) -> None:
    s = Scorer(manifest, onnx_providers=("NoSuchExecutionProvider", "CPUExecutionProvider"))
    assert s.backend_name == "onnx:CPUExecutionProvider"
    s2 = Scorer(manifest, onnx_providers=("NoSuchExecutionProvider",))
    assert s2.backend_name == "onnx:CPUExecutionProvider"
