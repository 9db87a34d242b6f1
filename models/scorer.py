"""The scorer: normalises raw windows, batches them, and runs the backend chain."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import EdgeAgentError, ModelError
from edge_agent.models import base
from edge_agent.models.base import Backend, BackendOptions, ModelOutput
from edge_agent.models.manifest import Manifest

log = structlog.get_logger(__name__)

FORMATS = {"litert": "tflite"}  # backend name prefix -> artifact format, where they differ
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class Scorer:
    """Scores raw windows [N, W, S] with the first backend of the chain that works.

    The chain is probed at construction: backends that cannot load are logged, counted and
    skipped. A backend that raises while scoring is dropped for the next one, which
    re-scores the same windows, so nothing in flight is lost.
    """

    def __init__(
        self,
        manifest: Manifest,
        backends: Sequence[str] = ("onnx",),
        onnx_providers: Sequence[str] = DEFAULT_PROVIDERS,
        max_batch: int = 64,
        litert_delegates: Sequence[str] = (),
        precision: str = "fp32",
    ) -> None:
        if max_batch < 1:
            raise ModelError(f"EDGE_MODEL__MAX_BATCH={max_batch}: must be at least 1")
        if not backends:
            raise ModelError("EDGE_MODEL__BACKENDS=[]: name at least one backend")
        self.manifest = manifest
        self.max_batch = max_batch
        self._mean = np.asarray(manifest.normalisation.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(manifest.normalisation.std, np.float64)).astype(
            np.float32
        )
        self._shape = (manifest.window, len(manifest.signals))
        # The same, repeated for every row of a window: normalising [N, W*S] runs numpy's
        # inner loop over W*S values instead of S (5), three times faster at batch 64.
        self._mean_rows = np.tile(self._mean, manifest.window)
        self._inv_std_rows = np.tile(self._inv_std, manifest.window)
        self._timers: dict[str, Callable[[float], None]] = {}
        self._options = BackendOptions(tuple(onnx_providers), tuple(litert_delegates), precision)
        self._pending = list(backends)
        self._backend: Backend = self._next_backend()

    @property
    def backend_name(self) -> str:
        """Name of the backend in use, e.g. `onnx:CPUExecutionProvider`."""
        return self._backend.name

    @property
    def threshold(self) -> float:
        """The anomaly threshold calibrated for the artifact in use."""
        fmt = self._backend.name.split(":", 1)[0]
        fmt = FORMATS.get(fmt, fmt)
        for art in self.manifest.artifacts:
            if art.format == fmt and art.precision == self._options.precision:
                return self.manifest.threshold if art.threshold is None else art.threshold
        return self.manifest.threshold

    def _next_backend(self) -> Backend:
        while self._pending:
            name = self._pending.pop(0)
            try:
                backend = base.create(name, self.manifest, self._options)
            except EdgeAgentError as exc:
                metrics.BACKEND_FAILURES.labels(backend=name, stage="load").inc()
                log.warning(
                    "model backend cannot load, trying the next", backend=name, error=str(exc)
                )
                continue
            # One process scores with one backend at a time: the gauge holds only it.
            metrics.BACKEND.clear()
            metrics.BACKEND.labels(backend=backend.name).set(1)
            log.info("model backend in use", backend=backend.name, model=self.manifest.name)
            return backend
        raise ModelError(
            "EDGE_MODEL__BACKENDS: no backend left that can run the model "
            f"{self.manifest.name} {self.manifest.version}"
        )

    def score(self, windows: np.ndarray, centre: np.ndarray | None = None) -> ModelOutput:
        """Score raw float32 windows [N, W, S]; windows are normalised here.

        `centre` [N, S], when given, replaces the manifest's mean for each window: a learned
        model's per-asset baseline, which follows the asset while it is healthy.
        """
        if windows.ndim != 3 or windows.shape[1:] != self._shape:
            raise ModelError(
                f"windows of shape {windows.shape} do not fit the model's "
                f"[N, {self._shape[0]}, {self._shape[1]}]"
            )
        n = windows.shape[0]
        if n == 0:
            classes = len(self.manifest.classes)
            empty = np.empty(0, np.float32)
            return ModelOutput(
                empty, np.empty((0, self._shape[1]), np.float32), np.empty((0, classes), np.float32)
            )
        if centre is None:
            x = np.subtract(windows.reshape(n, -1), self._mean_rows, dtype=np.float32)
            np.multiply(x, self._inv_std_rows, out=x)
            x = x.reshape(n, *self._shape)
        else:
            mean = centre.astype(np.float32)[:, None, :]
            x = (windows.astype(np.float32, copy=False) - mean) * self._inv_std
        if n <= self.max_batch:
            return self._run(x)
        parts = [self._run(x[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
        return ModelOutput(*(np.concatenate(p) for p in zip(*parts, strict=True)))

    def _run(self, batch: np.ndarray) -> ModelOutput:
        batch = np.ascontiguousarray(batch)
        while True:
            backend = self._backend
            start = time.perf_counter()
            try:
                out = backend.run(batch)
            except Exception as exc:
                metrics.BACKEND_FAILURES.labels(backend=backend.name, stage="run").inc()
                log.exception(
                    "model backend failed, re-scoring on the next",
                    backend=backend.name,
                    error=repr(exc),
                )
                metrics.BACKEND.labels(backend=backend.name).set(0)
                self._backend = self._next_backend()
                continue
            self._timer(backend.name)(time.perf_counter() - start)
            return out

    def _timer(self, name: str) -> Callable[[float], None]:
        # The histogram's child, looked up once per backend: labels() costs a lock and a
        # dict lookup (~5 us), as much as normalising a batch.
        timer = self._timers.get(name)
        if timer is None:
            timer = self._timers[name] = metrics.INFERENCE_SECONDS.labels(backend=name).observe
        return timer
