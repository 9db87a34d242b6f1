"""Per-backend model latency: batch 1, 16 and 64, median and p99 per window.

Each backend's figures stand next to the bare runtime call (`InferenceSession.run`,
`Interpreter.invoke`) on the same normalised input, so the wrapper's overhead shows.
Run alone: `python -m bench.bench_models`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter

from edge_agent.models.manifest import Manifest, load_manifest
from edge_agent.models.scorer import Scorer
from edge_agent.models.training.dataset import cut
from edge_agent.simulator.plant import FaultSpec, simulate

BATCHES = (1, 16, 64)
CALLS = {1: 2000, 16: 500, 64: 200}


def _windows(manifest: Manifest) -> np.ndarray:
    trace = simulate("bench", 3, 4 * 3600, fault=FaultSpec("cavitation", 3 * 3600))
    x, _ = cut(trace.values, manifest.window, manifest.hop)
    return x


def _time(fn: Callable[[], object], calls: int) -> np.ndarray:
    for _ in range(min(50, calls)):
        fn()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - start
    return out


GOAL_RATIO = 1.5  # wrapper / bare runtime call at batch 64 (issue 14)


def _row(label: str, batch: int, ns: np.ndarray) -> float:
    """Print one row; return the median in microseconds per window."""
    per = ns / batch / 1e3  # microseconds per window
    print(
        f"{label:<34} batch {batch:>3}  median {np.median(per):8.2f} us/window"
        f"  p99 {np.percentile(per, 99):8.2f} us/window"
    )
    return float(np.median(per))


def _bare_onnx(path: str) -> Callable[[np.ndarray], Callable[[], object]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    def bind(x: np.ndarray) -> Callable[[], object]:
        return lambda: session.run(None, {"window": x})

    return bind


def _bare_tflite(path: str) -> Callable[[np.ndarray], Callable[[], object]]:
    interp = Interpreter(model_path=path, num_threads=1)

    def bind(x: np.ndarray) -> Callable[[], object]:
        interp.resize_tensor_input(0, list(x.shape))
        interp.allocate_tensors()
        interp.set_tensor(0, x)
        invoke: Callable[[], object] = interp.invoke
        return invoke

    return bind


def main() -> None:
    manifest = load_manifest(None)
    raw = _windows(manifest)
    mean = np.asarray(manifest.normalisation.mean, np.float32)
    std = np.asarray(manifest.normalisation.std, np.float32)
    norm = ((raw - mean) / std).astype(np.float32)
    print(f"model {manifest.name} {manifest.version}; one thread; {raw.shape[0]} windows")
    for art in manifest.artifacts:
        path = manifest.artifact(art.format, art.precision)
        backend = "onnx" if art.format == "onnx" else "litert"
        scorer = Scorer(
            manifest,
            backends=(backend,),
            onnx_providers=("CPUExecutionProvider",),
            precision=art.precision,
            max_batch=64,
        )
        bare = _bare_onnx(str(path)) if art.format == "onnx" else _bare_tflite(str(path))
        tag = f"{art.format} {art.precision} ({art.bytes} B)"
        call = "InferenceSession.run" if art.format == "onnx" else "Interpreter.invoke"
        for batch in BATCHES:
            xr, xn = raw[:batch].copy(), norm[:batch].copy()
            wrapped = _row(
                f"Scorer.score   {tag}",
                batch,
                _time(functools.partial(scorer.score, xr), CALLS[batch]),
            )
            plain = _row(f"bare {call}", batch, _time(bare(xn), CALLS[batch]))
        ratio = wrapped / plain
        verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
        print(
            f"  {tag}: Scorer.score / bare {call} at batch {BATCHES[-1]}: {ratio:.2f}x "
            f"(goal <= {GOAL_RATIO:g}x: {verdict})"
        )


if __name__ == "__main__":
    main()
