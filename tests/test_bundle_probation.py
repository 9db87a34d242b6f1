"""Probation proves every artifact a bundle ships, on the real runtimes, in a child process."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.bundles.bundle import Bundle, read_manifest
from edge_agent.daemon.bundles.probation import ProbationError, ProbeLimits, check_models
from tests.update_kit import Ops

ARTIFACTS = {
    "pump-fault.fp32.onnx": "onnx",
    "pump-fault.int8.onnx": "onnx",
    "pump-fault.fp32.tflite": "litert",
    "pump-fault.int8.tflite": "litert",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real bundle (shipped model, golden pair made by `bundle build`), built once."""
    return Ops(tmp_path_factory.mktemp("ops")).bundle(3)


@pytest.fixture
def bundle_dir(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "b")
    return tmp_path / "b"


def _bundle(path: Path) -> Bundle:
    return Bundle(path, read_manifest(path))


def _replace(bundle_dir: Path, file: str, data: bytes) -> None:
    """An artifact replaced, its hash and size in the model manifest updated to match."""
    (bundle_dir / "model" / file).write_bytes(data)
    model = bundle_dir / "model" / "manifest.json"
    manifest = json.loads(model.read_text())
    for art in manifest["artifacts"]:
        if art["file"] == file:
            art["sha256"], art["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    model.write_text(json.dumps(manifest))


def test_every_artifact_is_run_on_its_runtime(bundle_dir: Path) -> None:
    results = check_models(_bundle(bundle_dir))
    assert {r.file: (r.backend, r.outcome) for r in results} == {
        f"model/{f}": (backend, "ok") for f, backend in ARTIFACTS.items()
    }
    golden = json.loads((bundle_dir / "golden.json").read_text())
    assert set(golden["artifacts"]) == set(ARTIFACTS)  # each held to its own output
    assert golden["artifacts"]["pump-fault.int8.onnx"]["rtol"] > golden["rtol"]


@pytest.mark.parametrize("file", sorted(ARTIFACTS))
def test_one_bad_artifact_of_four_fails_the_bundle(bundle_dir: Path, file: str) -> None:
    _replace(bundle_dir, file, b"\x08\x07 not a model " * 64)
    with pytest.raises(ProbationError) as info:
        check_models(_bundle(bundle_dir))
    assert info.value.file == f"model/{file}"
    assert "does not load or run" in str(info.value)


def test_an_artifact_that_computes_something_else_fails(bundle_dir: Path) -> None:
    # The int8 ONNX file swapped for the fp32 one: it loads and runs, but its answers are
    # not the int8 model's own.
    fp32 = (bundle_dir / "model" / "pump-fault.fp32.onnx").read_bytes()
    _replace(bundle_dir, "pump-fault.int8.onnx", fp32)
    golden = json.loads((bundle_dir / "golden.json").read_text())
    own = golden["artifacts"]["pump-fault.int8.onnx"]
    own["rtol"], own["atol"] = 1e-4, 1e-5  # the stated tolerance of a stricter release
    (bundle_dir / "golden.json").write_text(json.dumps(golden))
    with pytest.raises(ProbationError, match="golden check: score differs") as info:
        check_models(_bundle(bundle_dir))
    assert info.value.file == "model/pump-fault.int8.onnx"


def test_a_golden_pair_without_own_outputs_uses_the_fp32_reference(bundle_dir: Path) -> None:
    golden = json.loads((bundle_dir / "golden.json").read_text())
    del golden["artifacts"]  # as bundles built before per-artifact outputs
    (bundle_dir / "golden.json").write_text(json.dumps(golden))
    results = check_models(_bundle(bundle_dir))
    assert [r.outcome for r in results] == ["ok"] * 4
    assert all("fp32 reference" in r.detail for r in results)


def test_a_golden_input_of_the_wrong_shape_names_the_golden_file(bundle_dir: Path) -> None:
    golden = json.loads((bundle_dir / "golden.json").read_text())
    golden["input"] = np.zeros((2, 3, 4)).tolist()
    (bundle_dir / "golden.json").write_text(json.dumps(golden))
    with pytest.raises(ProbationError) as info:
        check_models(_bundle(bundle_dir))
    assert info.value.file == "golden.json"


def test_a_probe_that_runs_too_long_is_killed(bundle_dir: Path) -> None:
    with pytest.raises(ProbationError, match=r"timed out after 0\.05 s"):
        check_models(_bundle(bundle_dir), ProbeLimits(timeout_s=0.05))


def test_a_model_that_wants_too_much_memory_fails_in_the_probe(bundle_dir: Path) -> None:
    """A graph that allocates 8 GiB fails in the bounded child; this process never sees it."""
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    tensor = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["n"], value=helper.make_tensor(
                "n", onnx.TensorProto.INT64, [1], [1 << 31])),
            helper.make_node("ConstantOfShape", ["n"], ["big"], value=helper.make_tensor(
                "one", tensor, [1], [1.0])),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("ReduceMean", ["window"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Add", ["mean", "total"], ["score"]),
            helper.make_node("ReduceMean", ["window"], ["contrib"], axes=[1], keepdims=0),
            helper.make_node("Concat", ["contrib", "contrib"], ["wide"], axis=1),
            helper.make_node("Slice", ["wide", "s0", "s8", "s1"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "bomb",
        [helper.make_tensor_value_info("window", tensor, [None, 30, 5])],
        [helper.make_tensor_value_info("score", tensor, [None]),
         helper.make_tensor_value_info("contrib", tensor, [None, 5]),
         helper.make_tensor_value_info("probs", tensor, [None, 8])],
        [helper.make_tensor("s0", onnx.TensorProto.INT64, [1], [0]),
         helper.make_tensor("s8", onnx.TensorProto.INT64, [1], [8]),
         helper.make_tensor("s1", onnx.TensorProto.INT64, [1], [1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _replace(bundle_dir, "pump-fault.fp32.onnx", model.SerializeToString())
    with pytest.raises(ProbationError) as info:
        check_models(_bundle(bundle_dir), ProbeLimits(memory_mb=1024))
    assert info.value.file == "model/pump-fault.fp32.onnx"
    assert "alloc" in str(info.value).lower(), info.value


def _probe_pid(deadline_s: float = 30.0) -> int:
    """The probe child of this process, once it has started."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (proc / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == os.getpid() and b"edge_agent.daemon.bundles.probe" in cmdline:
                return int(proc.name)
        time.sleep(0.01)
    raise AssertionError("no probe process")


def test_a_probe_that_crashes_fails_the_bundle_naming_what_it_ran(bundle_dir: Path) -> None:
    """A runtime that crashes on a model (here: the probe killed by SIGSEGV mid-way)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(check_models, _bundle(bundle_dir))
        pid = _probe_pid()
        time.sleep(0.3)  # into its imports or its first artifacts
        os.kill(pid, signal.SIGSEGV)
        with pytest.raises(ProbationError, match="killed by SIGSEGV") as info:
            running.result(timeout=60)
    files = {"golden.json", "model/manifest.json", *(f"model/{f}" for f in ARTIFACTS)}
    assert info.value.file in files
