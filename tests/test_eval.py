"""The held-out evaluation (issue 3): targets, signature agreement, and artifact parity.

The evaluation set is simulated once per module (about 4 s) and scored by each artifact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge_agent.models.manifest import Manifest, load_manifest
from edge_agent.models.scorer import Scorer
from edge_agent.models.training import evaluate
from edge_agent.simulator.plant import Trace
from edge_agent.simulator.scenarios import ABRUPT, evaluation_set

ARTIFACTS = [("onnx", "fp32"), ("onnx", "int8"), ("litert", "fp32"), ("litert", "int8")]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest(None)


@pytest.fixture(scope="module")
def traces() -> list[tuple[str, Trace]]:
    normal, faults = evaluation_set()
    return [(sc.name, sc.run()) for sc in [*normal, *faults]]


def _scorer(manifest: Manifest, backend: str, precision: str) -> Scorer:
    return Scorer(
        manifest,
        backends=(backend,),
        onnx_providers=("CPUExecutionProvider",),
        max_batch=1024,
        precision=precision,
    )


@pytest.fixture(scope="module")
def reports(
    manifest: Manifest, traces: list[tuple[str, Trace]]
) -> Callable[[str, str], evaluate.Report]:
    cache: dict[tuple[str, str], evaluate.Report] = {}

    def get(backend: str, precision: str) -> evaluate.Report:
        if (backend, precision) not in cache:
            s = _scorer(manifest, backend, precision)
            report = evaluate.Report()
            for name, trace in traces:
                evaluate.evaluate_trace(
                    name, trace, s.score, s.threshold, 30, 5, manifest.classes, report
                )
            cache[backend, precision] = report
        return cache[backend, precision]

    return get


def test_fp32_onnx_meets_the_targets(reports: Callable[[str, str], evaluate.Report]) -> None:
    report = reports("onnx", "fp32")
    table = evaluate.table(report)
    assert evaluate.macro_f1(report) >= 0.90, table
    assert evaluate.false_alarms_per_day(report) <= 1.0, table
    abrupt = [e.delay_s for e in report.events if e.kind in ABRUPT]
    assert None not in abrupt, "an abrupt fault was missed"
    assert float(np.median([d for d in abrupt if d is not None])) <= 60.0, table
    assert report.normal_seconds >= 10 * 86_400  # enough normal time to count false alarms


def test_leading_signal_matches_the_signature(
    reports: Callable[[str, str], evaluate.Report],
) -> None:
    report = reports("onnx", "fp32")
    detected = [e for e in report.events if e.detected]
    misses = evaluate.signature_misses(report)
    described = [f"{e.name}: {e.top_signal} instead of {e.signature}" for e in misses]
    assert len(detected) >= 0.9 * len(report.events)
    assert len(misses) <= 0.1 * len(detected), "leading signal misses: " + "; ".join(described)


@pytest.mark.parametrize(("backend", "precision"), ARTIFACTS[1:])
def test_every_artifact_is_listed_and_verified(
    manifest: Manifest, backend: str, precision: str
) -> None:
    fmt = "onnx" if backend == "onnx" else "tflite"
    entry = manifest.artifact_entry(fmt, precision)
    assert entry.threshold is not None
    assert manifest.artifact(fmt, precision).stat().st_size == entry.bytes


def test_fp32_tflite_scores_match_fp32_onnx(
    reports: Callable[[str, str], evaluate.Report],
) -> None:
    onnx = np.concatenate(reports("onnx", "fp32").scores)
    tflite = np.concatenate(reports("litert", "fp32").scores)
    assert onnx.shape == tflite.shape
    worst = float(np.abs(onnx - tflite).max())
    assert worst <= 1e-4, f"largest |score difference| {worst}"


@pytest.mark.parametrize("backend", ["onnx", "litert"])
def test_int8_keeps_the_class_and_the_f1(
    reports: Callable[[str, str], evaluate.Report], backend: str
) -> None:
    fp32 = reports("onnx", "fp32")
    int8 = reports(backend, "int8")
    same = np.mean(np.concatenate(fp32.top_class) == np.concatenate(int8.top_class))
    assert same >= 0.99, f"same top class on {same:.4f} of windows"
    gap = abs(evaluate.macro_f1(fp32) - evaluate.macro_f1(int8))
    assert gap <= 0.02, evaluate.table(int8)
