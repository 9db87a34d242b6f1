"""ONNX Runtime backend: execution providers tried in the configured order."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog

from edge_agent.core.errors import ModelError
from edge_agent.models.base import BackendOptions, ModelOutput, register
from edge_agent.models.manifest import Manifest

log = structlog.get_logger(__name__)
OUTPUTS = ("score", "contrib", "probs")


class OnnxBackend:
    """A model file on ONNX Runtime, with the first requested providers that exist."""

    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
    ) -> None:
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        missing = [p for p in providers if p not in available]
        if missing:
            # Info, not warning: the default chain names TensorRT and CUDA, which a CPU-only
            # gateway never has; the provider actually used is logged when the model loads.
            log.info("onnx providers not available", missing=missing, available=available)
        if "CPUExecutionProvider" not in chosen:
            # ONNX Runtime runs any node the others cannot place on the CPU anyway; naming it
            # keeps that fallback explicit when the configured list forgot it.
            chosen.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        # Gateway CPUs are small and the agent has other work: one thread per call. bench/
        # measures the batch sizes where more threads would start to pay.
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except (RuntimeError, ValueError, ort.capi.onnxruntime_pybind11_state.Fail) as exc:
            raise ModelError(f"model file {path}: ONNX Runtime cannot load it ({exc})") from exc
        self.providers: tuple[str, ...] = tuple(self.session.get_providers())
        self.name = f"onnx:{self.providers[0]}"
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"model file {path}: expected one input, found {len(inputs)}")
        self._input = inputs[0].name
        shape = inputs[0].shape
        self._window, self._signals = int(shape[1]), int(shape[2])
        self._outputs = list(OUTPUTS)
        # Warm-up: the first run allocates the arena and plans memory; do it at load time,
        # not on the first real window.
        self.run(np.zeros((1, self._window, self._signals), np.float32))
        log.info("onnx backend loaded", path=str(path), providers=list(self.providers))

    def run(self, x: np.ndarray) -> ModelOutput:
        """Score a batch of normalised windows [N, W, S]."""
        score, contrib, probs = self.session.run(self._outputs, {self._input: x})
        return ModelOutput(score, contrib, probs)


@register("onnx")
def create(manifest: Manifest, options: BackendOptions) -> OnnxBackend:
    """Registry entry: the manifest's ONNX artifact at the requested precision."""
    return OnnxBackend(manifest.artifact("onnx", options.precision), options.onnx_providers)
