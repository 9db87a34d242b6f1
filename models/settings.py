"""Settings of the model and its runtimes."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_agent.core.settings import Section

BackendName = Literal["onnx", "litert"]

# Files that exist only where an NVIDIA GPU is visible to this process: a discrete GPU's
# device node (desktop driver, also what the NVIDIA container toolkit maps in), and on a
# Jetson the L4T release file and its GPU device nodes. Looked at, never opened: deciding
# must not import ONNX Runtime (30 MB) on boxes that will not use it.
NVIDIA_MARKERS = (
    Path("/dev/nvidia0"),
    Path("/etc/nv_tegra_release"),
    Path("/dev/nvhost-ctrl"),
    Path("/dev/nvhost-ctrl-gpu"),
    Path("/dev/nvgpu/igpu0"),
)
# ONNX Runtime builds with the CUDA and TensorRT providers (PyPI's and NVIDIA's Jetson wheels);
# the plain `onnxruntime` runs on the CPU only, where LiteRT is faster and smaller.
GPU_RUNTIMES = ("onnxruntime-gpu",)


def _installed(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return name
    return None


def auto_backends(
    markers: tuple[Path, ...] = NVIDIA_MARKERS, runtimes: tuple[str, ...] = GPU_RUNTIMES
) -> tuple[list[BackendName], str]:
    """The order `auto` stands for here, and why.

    ONNX first where an NVIDIA GPU is visible and ONNX Runtime is a GPU build (its TensorRT
    and CUDA providers use the GPU); else LiteRT first: on a CPU it scores these small models
    about 3x faster than ONNX Runtime (bench models) and costs ~15 MB of memory instead of
    ~37. The other stays as the fallback.
    """
    gpu = next((m for m in markers if m.exists()), None)
    if gpu is None:
        return ["litert", "onnx"], "no NVIDIA GPU visible"
    runtime = _installed(runtimes)
    if runtime is None:
        return ["litert", "onnx"], (
            f"NVIDIA GPU visible ({gpu}) but no GPU build of ONNX Runtime installed "
            f"({', '.join(runtimes)})"
        )
    return ["onnx", "litert"], f"NVIDIA GPU visible ({gpu}), {runtime} installed"


class ModelSettings(Section):
    """The anomaly model and its runtimes."""

    manifest: Path | None = Field(
        None, description="Model manifest.json; empty means the model shipped with the agent."
    )
    backends: Literal["auto"] | list[BackendName] = Field(
        "auto",
        description="Backends to try, in order (JSON list); the first that loads is used and "
        'the next takes over if it fails. auto: ["onnx", "litert"] where an NVIDIA GPU is '
        'visible (/dev/nvidia0, a Jetson) and onnxruntime-gpu is installed, else ["litert", '
        '"onnx"].',
    )
    onnx_providers: list[str] = Field(
        default_factory=lambda: [
            "TensorrtExecutionProvider",
            "CUDAExecutionProvider",
            "CPUExecutionProvider",
        ],
        description="ONNX Runtime execution providers to try, in order (JSON list).",
    )
    max_batch: int = Field(64, ge=1, le=4096, description="Windows scored in one model call.")
    litert_delegates: list[str] = Field(
        default_factory=list,
        description="LiteRT delegate libraries to try before the CPU (JSON list), e.g. "
        '["libedgetpu.so.1"] for a Coral Edge TPU; one that cannot load is logged and skipped.',
    )
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="Model precision to load: fp32, or int8 (smaller and faster)."
    )

    def backend_order(self) -> tuple[list[BackendName], str]:
        """The backends to try, in order, and why that order (for the start-up log)."""
        if self.backends == "auto":
            order, why = auto_backends()
            return order, f"auto: {why}"
        return list(self.backends), "EDGE_MODEL__BACKENDS"

    @property
    def order(self) -> list[BackendName]:
        """The backends to try, in order: `backends` with `auto` resolved on this box."""
        return self.backend_order()[0]
