"""The backend interface and the one registry of backends."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import structlog

from edge_agent.core.errors import ModelError

if TYPE_CHECKING:
    from edge_agent.models.manifest import Manifest


class ModelOutput(NamedTuple):
    """What a model returns for a batch of N windows."""

    score: np.ndarray  # float32 [N]
    contrib: np.ndarray  # float32 [N, S] signed, positive = above normal
    probs: np.ndarray  # float32 [N, C] softmax over the manifest's classes


class Backend(Protocol):
    """A loaded model on one runtime: takes normalised float32 windows [N, W, S]."""

    name: str

    def run(self, x: np.ndarray) -> ModelOutput:
        """Score a batch of normalised windows."""
        ...


class BackendOptions(NamedTuple):
    """Runtime choices passed to every backend factory (each reads what it needs)."""

    onnx_providers: tuple[str, ...] = ("CPUExecutionProvider",)
    litert_delegates: tuple[str, ...] = ()
    precision: str = "fp32"


BackendFactory = Callable[["Manifest", BackendOptions], Backend]

_REGISTRY: dict[str, BackendFactory] = {}
_BROKEN: dict[str, str] = {}  # backend -> why its module could not be imported
log = structlog.get_logger(__name__)


def register(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Class or function decorator: make a backend factory available under `name`."""

    def deco(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


BUILTIN = ("onnx", "litert")


def _load_builtin(name: str) -> None:
    # Imported for its registration side effect, and only when asked for: each runtime costs
    # tens of MB of RSS (onnxruntime ~30, LiteRT ~12), so the one that does not serve is never
    # loaded. A module whose runtime cannot be imported is logged and remembered, not fatal:
    # asking for it names the cause.
    if name not in BUILTIN or name in _REGISTRY or name in _BROKEN:
        return
    try:
        importlib.import_module(f"edge_agent.models.{name}")
    except ImportError as exc:
        _BROKEN[name] = str(exc)
        log.warning("model backend unavailable", backend=name, error=str(exc))


def backend_names() -> tuple[str, ...]:
    """Names of the registered backends (imports every builtin runtime to find out)."""
    for name in BUILTIN:
        _load_builtin(name)
    return tuple(_REGISTRY)


def create(name: str, manifest: Manifest, options: BackendOptions) -> Backend:
    """Load backend `name` for `manifest`; ModelError if it is unknown or cannot load."""
    _load_builtin(name)
    factory = _REGISTRY.get(name)
    if factory is None and name in _BROKEN:
        raise ModelError(f"EDGE_MODEL__BACKENDS: backend {name!r} unavailable: {_BROKEN[name]}")
    if factory is None:
        known = ", ".join(dict.fromkeys((*BUILTIN, *_REGISTRY)))
        raise ModelError(f"EDGE_MODEL__BACKENDS: unknown backend {name!r}; known: {known}")
    return factory(manifest, options)
