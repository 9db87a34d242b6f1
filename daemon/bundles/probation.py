"""Probation of a new bundle: its rules compile, its model gives the golden output.

The golden pair (`golden.json` in the bundle) is made when the bundle is built: normalised
windows [N, W, S] and what the model returned for them. On the gateway the same windows must
give the same outputs within the stated tolerance, on the backend the agent will use; this
catches a damaged or mis-converted model, and a runtime that computes something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from edge_agent.core.errors import BundleError, EdgeAgentError
from edge_agent.daemon.bundles.bundle import Bundle


class Golden(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A golden input and the outputs the model must reproduce from it."""

    input: list[Any]  # normalised windows [N, W, S]
    score: list[float]
    probs: list[list[float]]
    atol: float = 1e-4
    rtol: float = 1e-3


def read_golden(path: Path) -> Golden:
    """Read a golden pair; BundleError naming the file when it is malformed."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Golden)
    except (OSError, msgspec.DecodeError) as exc:
        raise BundleError(f"golden pair {path}: {exc}") from exc


def make_golden(manifest_path: Path, x: np.ndarray, backend: str = "onnx") -> Golden:
    """Run the model on `x` (normalised windows) and record the result as a golden pair."""
    from edge_agent.models.base import BackendOptions, create  # noqa: PLC0415 - heavy imports
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

    out = create(backend, load_manifest(manifest_path), BackendOptions()).run(x.astype(np.float32))
    return Golden(input=x.tolist(), score=out.score.tolist(), probs=out.probs.tolist())


def check_golden(bundle: Bundle, backend: str = "onnx") -> None:
    """Raise BundleError unless the bundle's model reproduces its golden outputs."""
    from edge_agent.models.base import BackendOptions, create  # noqa: PLC0415
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

    golden = read_golden(bundle.golden_path)
    try:
        model = create(backend, load_manifest(bundle.model_manifest_path), BackendOptions())
        out = model.run(np.asarray(golden.input, dtype=np.float32))
    except EdgeAgentError as exc:
        raise BundleError(f"golden check: the model does not run ({exc})") from exc
    for name, got, want in (
        ("score", out.score, golden.score),
        ("probs", out.probs, golden.probs),
    ):
        expected = np.asarray(want, dtype=np.float32)
        if got.shape != expected.shape:
            raise BundleError(f"golden check: {name} shape {got.shape}, expected {expected.shape}")
        if not np.allclose(got, expected, rtol=golden.rtol, atol=golden.atol):
            worst = float(np.max(np.abs(got - expected)))
            raise BundleError(
                f"golden check: {name} differs by up to {worst:.6g} "
                f"(atol {golden.atol}, rtol {golden.rtol})"
            )


def check_rules(bundle: Bundle) -> None:
    """Raise BundleError unless the bundle's rule packs load and compile."""
    from edge_agent.rules.pack import load_pack  # noqa: PLC0415

    try:
        load_pack(bundle.rule_pack_paths)
    except EdgeAgentError as exc:
        raise BundleError(f"rule packs do not compile: {exc}") from exc


def check_bundle(bundle: Bundle) -> None:
    """Everything probation checks before the bundle is trusted with live data."""
    check_rules(bundle)
    check_golden(bundle)
