"""The probation probe: a child process that loads and runs each model artifact of a bundle.

    python -m edge_agent.daemon.bundles.probe --model M --golden G [--prefix model/] ...

It first bounds itself (address space, CPU time, no core file), then for every artifact of
the model manifest prints `@probe {"begin": file}`, loads the artifact on its runtime as the
Scorer would (the backend registry, CPU only), runs the golden windows and prints
`@probe {"file", "backend", "outcome", "detail"}` with outcome ok, skipped (runtime not
installed here) or failed. Whatever a broken model does to a runtime stays in this process;
the parent (probation.py) names the file that was begun if the probe dies.
"""

from __future__ import annotations

import argparse
import resource
import sys
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import structlog

from edge_agent.core.errors import ModelError

if TYPE_CHECKING:
    from edge_agent.daemon.bundles.probation import Expected, Golden, Tolerance
    from edge_agent.models.base import ModelOutput
    from edge_agent.models.manifest import Manifest


def _say(**item: object) -> None:
    from edge_agent.daemon.bundles.probation import PROBE_MARK  # noqa: PLC0415

    sys.stdout.write(PROBE_MARK + msgspec.json.encode(item).decode() + "\n")
    sys.stdout.flush()


def backend_for(fmt: str, precision: str) -> tuple[str, str]:
    """The backend that runs artifacts of `fmt`, and why it cannot run this one here, or ""."""
    from edge_agent.models.base import backend_names  # noqa: PLC0415 - imports the runtimes
    from edge_agent.models.scorer import FORMATS  # noqa: PLC0415

    name = next((b for b, f in FORMATS.items() if f == fmt), fmt)
    if name not in backend_names():
        return name, f"runtime of backend {name} is not installed here"
    if name == "litert" and precision == "int8":
        from edge_agent.models import litert  # noqa: PLC0415

        if litert.RUNTIME == "tflite_runtime":  # the backend refuses it: never run here
            return name, "tflite_runtime cannot run int8 models; the backend refuses them"
    return name, ""


def run_artifact(manifest: Manifest, fmt: str, precision: str, x: np.ndarray) -> ModelOutput:
    """Load the artifact as the Scorer does (CPU only) and run `x` through it."""
    from edge_agent.models.base import BackendOptions, create  # noqa: PLC0415

    name, _ = backend_for(fmt, precision)
    return create(name, manifest, BackendOptions(precision=precision)).run(x)


def _expected(golden: Golden, file: str, precision: str) -> tuple[Expected, Tolerance, str]:
    from edge_agent.daemon.bundles.probation import (  # noqa: PLC0415
        INT8_AGAINST_FP32,
        Expected,
        Tolerance,
    )

    own = golden.artifacts.get(file)
    if own is not None:
        return own, Tolerance(own.atol, own.rtol), "its own golden output"
    ref = Expected(score=golden.score, probs=golden.probs)
    tol = Tolerance(golden.atol, golden.rtol) if precision == "fp32" else INT8_AGAINST_FP32
    return ref, tol, "the fp32 reference"


def compare(out: ModelOutput, expected: Expected, tol: Tolerance) -> str:
    """Why `out` is not `expected` within `tol` ("" when it is)."""
    for name in ("score", "probs", "contrib"):
        want = getattr(expected, name)
        if want is None:
            continue
        got = np.asarray(getattr(out, name))
        ref = np.asarray(want, dtype=np.float32)
        if got.shape != ref.shape:
            return f"golden check: {name} has shape {got.shape}, expected {ref.shape}"
        if not np.all(np.isfinite(got)):
            return f"golden check: {name} is not finite"
        if not np.allclose(got, ref, rtol=tol.rtol, atol=tol.atol):
            worst = float(np.max(np.abs(got - ref)))
            return (
                f"golden check: {name} differs by up to {worst:.6g} "
                f"(atol {tol.atol:g}, rtol {tol.rtol:g})"
            )
    return ""


def _one(manifest: Manifest, art: Any, golden: Golden, x: np.ndarray, file: str) -> None:
    name, why_not = backend_for(art.format, art.precision)
    if why_not:
        _say(file=file, backend=name, outcome="skipped", detail=why_not)
        return
    try:
        out = run_artifact(manifest, art.format, art.precision, x)
    # The runtimes raise their own types for a broken file (onnxruntime's InvalidProtobuf is
    # a bare Exception): whatever a candidate model raises is its failure, named by its file.
    except Exception as exc:  # noqa: BLE001
        kind = "" if isinstance(exc, ModelError) else f"{type(exc).__name__}: "
        _say(file=file, backend=name, outcome="failed", detail=f"does not load or run: {kind}{exc}")
        return
    expected, tol, against = _expected(golden, art.file, art.precision)
    why = compare(out, expected, tol)
    if why:
        _say(file=file, backend=name, outcome="failed", detail=f"{why} against {against}")
    else:
        _say(file=file, backend=name, outcome="ok", detail=f"{art.precision} matches {against}")


def _bound(memory_mb: int, cpu_s: int) -> None:
    for limit, value in (
        (resource.RLIMIT_AS, memory_mb << 20),
        (resource.RLIMIT_CPU, cpu_s),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(limit, (value, value))
        except (OSError, ValueError) as exc:  # a sandbox may forbid it: the parent's timeout holds
            sys.stderr.write(f"probe: cannot set limit {limit}: {exc}\n")


def main(argv: list[str] | None = None) -> int:
    """Probe every artifact; exit 0 once each has a result line (failures included)."""
    parser = argparse.ArgumentParser(prog="probe")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-name", default="model/manifest.json")
    parser.add_argument("--golden", required=True)
    parser.add_argument("--golden-name", default="golden.json")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument("--cpu-s", type=int, default=120)
    args = parser.parse_args(argv)
    _bound(args.memory_mb, args.cpu_s)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    from edge_agent.daemon.bundles.probation import Golden  # noqa: PLC0415
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415

    _say(begin=args.golden_name)
    try:
        with open(args.golden, "rb") as f:  # noqa: PTH123 - a path string from the parent
            golden = msgspec.json.decode(f.read(), type=Golden)
        x = np.asarray(golden.input, dtype=np.float32)
    except (OSError, msgspec.DecodeError, ValueError) as exc:
        _say(file=args.golden_name, backend="", outcome="failed", detail=f"malformed: {exc}")
        return 0
    _say(begin=args.model_name)
    try:
        manifest = load_manifest(args.model)
    except ModelError as exc:
        _say(file=args.model_name, backend="", outcome="failed", detail=str(exc))
        return 0
    if x.ndim != 3 or x.shape[1:] != (manifest.window, len(manifest.signals)):
        shape = (manifest.window, len(manifest.signals))
        detail = f"input of shape {x.shape}, the model takes [N, {shape[0]}, {shape[1]}]"
        _say(file=args.golden_name, backend="", outcome="failed", detail=detail)
        return 0
    first: dict[tuple[str, str], str] = {}
    for art in manifest.artifacts:
        file = f"{args.prefix}{art.file}"
        _say(begin=file)
        shadow = first.setdefault((art.format, art.precision), file)
        if shadow != file:  # the backends load the first of a format and precision
            _say(file=file, backend="", outcome="failed", detail=f"never loaded: {shadow} "
                 f"is the model's {art.format} {art.precision} artifact too")  # fmt: skip
            continue
        _one(manifest, art, golden, x, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
