"""Backend fallback for real: an Edge TPU delegate that cannot load, LiteRT on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_agent.core import metrics
from edge_agent.core.errors import ModelError
from edge_agent.models.litert import LiteRtBackend
from edge_agent.models.manifest import Manifest, load_manifest
from edge_agent.models.scorer import Scorer
from edge_agent.models.training.dataset import cut
from edge_agent.simulator.plant import simulate

EDGETPU = "libedgetpu.so.1"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(None)


def _failures(backend: str, stage: str) -> float:
    value: float = metrics.BACKEND_FAILURES.labels(backend=backend, stage=stage)._value.get()
    return value


# ai_edge_litert's Delegate.__del__ reads an attribute its failed __init__ never set; the
# AttributeError it prints at collection is the library's, not a swallowed error of ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_edge_tpu_delegate_that_cannot_load_falls_back_to_cpu(manifest: Manifest) -> None:
    before = _failures(f"litert:{EDGETPU}", "load")
    with capture_logs() as logs:
        s = Scorer(manifest, backends=("litert",), litert_delegates=(EDGETPU,))
    assert s.backend_name == "litert:cpu"
    assert _failures(f"litert:{EDGETPU}", "load") == before + 1
    assert any(
        e["event"] == "litert delegate cannot load" and e["delegate"] == EDGETPU for e in logs
    )
    assert metrics.BACKEND.labels(backend="litert:cpu")._value.get() == 1
    x, _ = cut(simulate("f1", 1, 600).values, 30, 5)
    out = s.score(x)
    assert out.score.shape == (x.shape[0],)
    assert (out.score < s.threshold).all()


def test_litert_matches_onnx_through_the_scorer(manifest: Manifest) -> None:
    x, _ = cut(simulate("f2", 2, 900).values, 30, 5)
    lite = Scorer(manifest, backends=("litert",), max_batch=16).score(x)
    onnx = Scorer(manifest, onnx_providers=("CPUExecutionProvider",)).score(x)
    np.testing.assert_allclose(lite.score, onnx.score, atol=1e-4)
    np.testing.assert_allclose(lite.probs, onnx.probs, atol=1e-4)


def test_backend_that_cannot_load_hands_over_to_the_next(
    manifest: Manifest, tmp_path: Path
) -> None:
    # A manifest whose TFLite file is damaged after verification: LiteRT refuses it and
    # ONNX takes over, with the load failure counted under the backend's name.
    path = manifest.artifact("tflite", "fp32")
    broken = tmp_path / path.name
    broken.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="LiteRT cannot load"):
        LiteRtBackend(broken)
    before = _failures("litert", "load")
    damaged = manifest.model_copy(update={"directory": tmp_path})
    (tmp_path / manifest.artifact("onnx").name).write_bytes(manifest.artifact("onnx").read_bytes())
    s = Scorer(damaged, backends=("litert", "onnx"), onnx_providers=("CPUExecutionProvider",))
    assert s.backend_name == "onnx:CPUExecutionProvider"
    assert _failures("litert", "load") == before + 1
