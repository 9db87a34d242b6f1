"""Learned models: the cost of a fit in the worker process, the files, and scoring per window.

- the worker (`python -m edge_agent.models.learn.worker`, as the agent starts it) on 400 rows
  x 8 signals and on a day at 1 Hz (86,400 rows x 8): wall time and the peak RSS of that
  process (os.wait4's rusage of the child), with its TFLite files (copies of the weightless
  template: no TensorFlow) and without them (`--tflite off`);
- the fit alone, in this process, on the day;
- the size of each model file;
- scoring per window, learned vs shipped model, through the Scorer on ONNX Runtime and on
  LiteRT (the default on a box without an NVIDIA GPU), batch 1 and 64.
Run alone: `python -m bench.bench_learn`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_models import _time
from edge_agent.models.learn.fit import FitOptions, fit
from edge_agent.models.manifest import Manifest, load_manifest
from edge_agent.models.scorer import Scorer

SIGNALS = [f"s{j}" for j in range(8)]
ROLES = ["vibration", "vibration", "current", "pressure", "temperature", "temperature"]
ROLES += ["voltage", "flow"]
UNITS = ["g", "g", "A", "bar", "degC", "degC", "V", "l/min"]
LEVEL = np.array([0.2, 0.27, 2.0, 0.3, 80.0, 26.0, 230.0, 120.0])
NOISE = np.array([0.004, 0.005, 0.15, 0.05, 0.3, 0.05, 3.0, 1.5])
CALLS = {1: 2000, 64: 200}


def _rows(n: int) -> np.ndarray:
    """A healthy pump at 1 Hz: noise, a slow thermal wander, flow in whole l/min."""
    rng = np.random.default_rng(0)
    x = LEVEL + NOISE * rng.standard_normal((n, 8))
    x[:, 4] += 2.0 * np.sin(np.arange(n) * 2 * np.pi / 86_400)
    x[:, 7] = np.round(x[:, 7])
    return x


def _worker(rows: np.ndarray, tmp: Path, *args: str) -> tuple[float, float, Manifest]:
    """Run the worker as the agent would; return (seconds, peak RSS in MiB, manifest)."""
    src, out = tmp / f"in-{len(rows)}.npz", tmp / f"model-{len(rows)}-{'-'.join(args)}"
    np.savez(src, rows=rows, signals=np.array(SIGNALS), roles=np.array(ROLES), units=UNITS)
    cmd = [sys.executable, "-m", "edge_agent.models.learn.worker", str(src), str(out), *args]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the max of all
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None
    last = json.loads(proc.stdout.read().splitlines()[-1])
    proc.stdout.close()
    if proc.returncode != 0 or not last.get("done"):
        msg = f"worker failed ({proc.returncode}): {last}"
        raise SystemExit(msg)
    return seconds, usage.ru_maxrss / 1024, load_manifest(Path(last["manifest"]))


def _per_window(scorer: Scorer, x: np.ndarray, batch: int) -> float:
    """Median microseconds per window of Scorer.score at `batch`."""
    ns = _time(functools.partial(scorer.score, x[:batch].copy()), CALLS[batch])
    return float(np.median(ns)) / batch / 1e3


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as name:
        tmp = Path(name)
        runs: list[tuple[str, int, tuple[str, ...]]] = [
            ("400 rows x 8", 400, ()),
            ("400 rows x 8, no TFLite", 400, ("--tflite", "off")),
            ("1 day x 8", 86_400, ()),
        ]
        learned = None
        for label, n, args in runs:
            seconds, rss, manifest = _worker(_rows(n), tmp, *args)
            print(f"worker fit {label:<22} {seconds:7.2f} s   peak RSS {rss:7.1f} MiB")
            if learned is None:
                learned = manifest
        day = _rows(86_400)
        start = time.perf_counter()
        fit(day, SIGNALS, ROLES, FitOptions(units=dict(zip(SIGNALS, UNITS, strict=True))))
        print(f"fit() alone, 1 day x 8 (in process)   {time.perf_counter() - start:7.2f} s")
        assert learned is not None
        for art in learned.artifacts:
            print(f"file {art.file:<24} {art.bytes:7d} B  ({art.format} {art.precision})")
        shipped = load_manifest(None)
        x_learned = _rows(64 + 15)
        x_learned = np.lib.stride_tricks.sliding_window_view(x_learned, (15, 8))[:64, 0]
        x_shipped = np.random.default_rng(1).normal(
            shipped.normalisation.mean, shipped.normalisation.std, (64, shipped.window, 5)
        )
        for backend, batch in itertools.product(("onnx", "litert"), (1, 64)):
            cost = {}
            for tag, manifest, x in (
                ("learned", learned, x_learned),
                ("shipped", shipped, x_shipped),
            ):
                scorer = Scorer(
                    manifest, backends=(backend,), onnx_providers=("CPUExecutionProvider",)
                )
                cost[tag] = _per_window(scorer, np.ascontiguousarray(x, np.float32), batch)
            print(
                f"Scorer.score {backend:<6} fp32 batch {batch:>2}: learned "
                f"{cost['learned']:7.2f} us/window, shipped {cost['shipped']:7.2f} us/window, "
                f"ratio {cost['learned'] / cost['shipped']:.2f}"
            )


if __name__ == "__main__":
    main()
