"""Settings of the model and its runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_agent.core.settings import Section

BackendName = Literal["onnx", "litert"]


def _default_backends() -> list[BackendName]:
    return ["onnx"]


class ModelSettings(Section):
    """The anomaly model and its runtimes."""

    manifest: Path | None = Field(
        None, description="Model manifest.json; empty means the model shipped with the agent."
    )
    backends: list[BackendName] = Field(
        default_factory=_default_backends,
        description="Backends to try, in order (JSON list); the first that loads is used and "
        "the next takes over if it fails.",
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
