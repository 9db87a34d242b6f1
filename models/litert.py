"""LiteRT (TFLite) backend: `ai_edge_litert`, else `tflite_runtime`; delegates tried first."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import ModelError
from edge_agent.models.base import BackendOptions, ModelOutput, register
from edge_agent.models.manifest import Manifest

try:
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    RUNTIME = "ai_edge_litert"
except ImportError as first:  # exercised in the numpy<2 tflite-runtime venv and without both
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate
    except ImportError as second:
        # Where neither is installed (ai-edge-litert has no wheels for the platform), the
        # registry logs this and the chain moves on: name both, not only the last tried.
        msg = f"neither ai_edge_litert ({first}) nor tflite_runtime ({second}) can be imported"
        raise ImportError(msg) from second

    RUNTIME = "tflite_runtime"

log = structlog.get_logger(__name__)


class LiteRtBackend:
    """A TFLite file on LiteRT: the first delegate that loads (e.g. the Edge TPU), else CPU."""

    def __init__(
        self,
        path: Path,
        delegates: Sequence[str] = (),
        signals: int = 5,
        classes: int = 8,
        threads: int = 1,
        window: Sequence[int] = (),
    ) -> None:
        self.interpreter: Any = None
        self.name = ""
        for library in delegates:
            try:
                delegate = load_delegate(library)
                self.interpreter = Interpreter(
                    model_path=str(path), experimental_delegates=[delegate], num_threads=threads
                )
            except (ValueError, OSError, RuntimeError) as exc:
                # A delegate that cannot load (no device, no library) is not fatal: the CPU
                # interpreter below takes over, and the failure is logged and counted.
                metrics.BACKEND_FAILURES.labels(backend=f"litert:{library}", stage="load").inc()
                log.warning("litert delegate cannot load", delegate=library, error=str(exc))
                continue
            self.name = f"litert:{library}"
            break
        if self.interpreter is None:
            try:
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
            except (ValueError, OSError, RuntimeError) as exc:
                raise ModelError(f"model file {path}: LiteRT cannot load it ({exc})") from exc
            self.name = "litert:cpu"
        inp = self.interpreter.get_input_details()
        if len(inp) != 1:
            raise ModelError(f"model file {path}: expected one input, found {len(inp)}")
        self._input = int(inp[0]["index"])
        own = tuple(int(d) for d in inp[0]["shape_signature"][1:])
        self._shape = _window_shape(path, own, tuple(window))
        self._score, self._contrib, self._probs = self._outputs(path, signals, classes)
        self._batch = -1
        # Warm-up: allocation and delegate preparation happen here, not on the first window.
        self.run(np.zeros((1, *self._shape), np.float32))
        log.info("litert backend loaded", path=str(path), backend=self.name, runtime=RUNTIME)

    def _outputs(self, path: Path, signals: int, classes: int) -> tuple[int, int, int]:
        # The converter names outputs after the graph, not after the signature: tell them
        # apart by shape ([N], [N, signals], [N, classes]). In a graph whose input is open
        # (a learned model's template) contrib is [N, -1]; probs keeps its classes.
        found: dict[str, int] = {}
        for d in self.interpreter.get_output_details():
            shape = tuple(int(v) for v in d["shape_signature"])
            if len(shape) == 1:
                found["score"] = int(d["index"])
            elif shape[-1] == -1 or shape[-1] == signals != classes:
                found["contrib"] = int(d["index"])
            elif shape[-1] == classes:
                found["probs"] = int(d["index"])
        if len(found) != 3:
            raise ModelError(f"model file {path}: outputs do not match score, contrib, probs")
        return found["score"], found["contrib"], found["probs"]

    def run(self, x: np.ndarray) -> ModelOutput:
        """Score a batch of normalised windows [N, W, S]."""
        n = int(x.shape[0])
        if n != self._batch:
            # Resizing re-plans memory: done only when the batch size changes.
            self.interpreter.resize_tensor_input(self._input, [n, *self._shape])
            self.interpreter.allocate_tensors()
            self._batch = n
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        get = self.interpreter.get_tensor
        return ModelOutput(get(self._score), get(self._contrib), get(self._probs))


def _window_shape(path: Path, own: tuple[int, ...], window: tuple[int, ...]) -> tuple[int, ...]:
    """A window's [W, S]: the file's, its open dimensions (-1) taken from `window`."""
    if not window and min(own, default=0) > 0:
        return own
    if len(window) != len(own) or any(o not in {-1, w} for o, w in zip(own, window, strict=True)):
        raise ModelError(
            f"model file {path}: input window {list(own)} (-1: open), the "
            f"manifest's is {list(window) or 'not given'}"
        )
    return window


@register("litert")
def create(manifest: Manifest, options: BackendOptions) -> LiteRtBackend:
    """Registry entry: the manifest's TFLite artifact at the requested precision."""
    if RUNTIME == "tflite_runtime" and options.precision == "int8":
        # Measured: tflite-runtime 2.14's hybrid FULLY_CONNECTED ignores per-channel weight
        # scales and picks the right class on half of the windows. Refusing here lets the
        # chain move on instead of scoring wrongly.
        raise ModelError(
            "EDGE_MODEL__PRECISION=int8: the int8 TFLite model needs ai_edge_litert; "
            "tflite_runtime computes its per-channel int8 layers wrongly"
        )
    return LiteRtBackend(
        manifest.artifact("tflite", options.precision),
        options.litert_delegates,
        signals=len(manifest.signals),
        classes=len(manifest.classes),
        window=(manifest.window, len(manifest.signals)),
    )
