"""The worker process the agent starts per asset: a real subprocess, JSON lines on stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.models.manifest import load_manifest
from edge_agent.models.scorer import Scorer

SIGNALS = ["vib", "current", "temp"]
ROLES = ["vibration", "current", "temperature"]


def _rows(n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(2)
    return np.array([2.0, 12.0, 45.0]) + np.array([0.05, 0.2, 0.1]) * rng.standard_normal((n, 3))


def _run(tmp_path: Path, *args: str, **arrays: Any) -> tuple[int, list[dict[str, Any]], str]:
    src = tmp_path / "in.npz"
    np.savez(src, **arrays)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.models.learn.worker",
            str(src),
            str(tmp_path / "m"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON lines only
    return proc.returncode, lines, proc.stderr


def test_the_worker_fits_and_writes_a_model_reporting_progress(tmp_path: Path) -> None:
    rows = _rows()
    code, lines, err = _run(
        tmp_path,
        "--tflite",
        "off",
        rows=rows,
        signals=np.array(SIGNALS),
        roles=np.array(ROLES),
        units=np.array(["mm/s", "A", "degC"]),
        tolerance_pct=np.array([np.nan, 10.0, np.nan]),
        seed=np.int64(3),
    )
    assert code == 0, err
    progress = [line["progress"] for line in lines[:-1]]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert all(isinstance(line["stage"], str) for line in lines[:-1])
    done = lines[-1]
    assert done == {"done": True, "manifest": str(tmp_path / "m" / "manifest.json"), "warnings": []}
    manifest = load_manifest(Path(done["manifest"]))
    assert manifest.kind == "learned"
    assert manifest.roles == ROLES
    assert manifest.training.seeds == {"seed": 3}
    assert manifest.training.metrics["current.limited_by"] == "floor"  # the 10 % given
    windows = np.lib.stride_tricks.sliding_window_view(rows, (15, 3))[:, 0].astype(np.float32)
    out = Scorer(manifest, onnx_providers=("CPUExecutionProvider",)).score(windows)
    assert out.score.max() < 1.0  # its own training rows are normal


def test_data_that_cannot_make_a_model_is_an_error_line_and_exit_1(tmp_path: Path) -> None:
    rows = _rows()
    rows[:, 1] = 7.0
    code, lines, _ = _run(tmp_path, rows=rows, signals=np.array(SIGNALS), roles=np.array(ROLES))
    assert code == 1
    assert lines[-1]["error"].startswith("signal 'current' is constant (7) from row 1 to row 500")
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_an_input_without_roles_is_refused_with_exit_2(tmp_path: Path) -> None:
    code, lines, _ = _run(tmp_path, rows=_rows(), signals=np.array(SIGNALS))
    assert code == 2
    assert "missing ['roles']" in lines[-1]["error"]


def test_the_memory_cap_holds_and_says_so(tmp_path: Path) -> None:
    # 400,000 rows x 8 need more than 280 MiB of address space once numpy and onnx are in.
    rows = np.random.default_rng(0).normal(10, 1, (400_000, 8))
    code, lines, _ = _run(
        tmp_path,
        "--max-memory-mb",
        "280",
        rows=rows,
        signals=np.array(list("abcdefgh")),
        roles=np.array(["other"] * 8),
    )
    assert code == 1
    assert lines[-1] == {"error": "out of memory: the fit needs more than --max-memory-mb=280"}


def test_the_worker_lowers_its_priority_and_caps_its_address_space() -> None:
    probe = (
        "import os, resource\n"
        "from edge_agent.models.learn.worker import limit\n"
        "before = os.nice(0)\n"
        "limit(4, 512)\n"
        "print(os.nice(0) - before, resource.getrlimit(resource.RLIMIT_AS)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["4", str(512 << 20)]
