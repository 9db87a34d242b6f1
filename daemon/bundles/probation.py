"""Probation of a new bundle: its rules compile, each model artifact gives its golden output.

Every artifact the bundle ships is proven on its own runtime, in a child process the agent
survives.

The golden pair (`golden.json` in the bundle) is made when the bundle is built: normalised
windows [N, W, S], a reference output (the first fp32 artifact's) and, per artifact, what
that artifact returned and the tolerance it is held to (fp32 and int8 differ, so each is
held to its own output). On the gateway each artifact whose runtime is installed is loaded
and run on the same windows (probe.py); an artifact that cannot load, raises, returns other
shapes, or differs beyond its tolerance fails probation with a reason naming its file.

The child process exists because a candidate model is untrusted input to native runtimes:
an exception type nobody expected, a crash, an endless graph or a huge allocation ends the
child (bounded in time, address space and CPU), never the agent.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import structlog

from edge_agent.core.errors import BundleError, EdgeAgentError
from edge_agent.daemon.bundles.bundle import Bundle

log = structlog.get_logger(__name__)

PROBE_MARK = "@probe "  # result lines of the child; anything else on stdout is noise
_TAIL = 400  # characters of the child's stderr kept for a reason


class Tolerance(NamedTuple):
    """`allclose(got, expected, rtol, atol)`, elementwise."""

    atol: float
    rtol: float


# fp32 on another runtime or CPU differs in the last bits; int8 kernels (MLAS, XNNPACK) round
# differently per instruction set. Without its own golden output an int8 artifact is held to
# the fp32 reference, where int8 differs by up to ~2 % on the shipped model: 5 % then.
TOLERANCE = {"fp32": Tolerance(1e-4, 1e-3), "int8": Tolerance(1e-3, 1e-2)}
INT8_AGAINST_FP32 = Tolerance(5e-2, 5e-2)


class Expected(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one artifact returned at build time, and the tolerance it is held to."""

    score: list[float]
    probs: list[list[float]] | None = None
    contrib: list[list[float]] | None = None
    atol: float = 1e-4
    rtol: float = 1e-3


class Golden(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A golden input, the reference outputs and each artifact's own (by its file name)."""

    input: list[Any]  # normalised windows [N, W, S]
    score: list[float]
    probs: list[list[float]]
    atol: float = 1e-4
    rtol: float = 1e-3
    artifacts: dict[str, Expected] = msgspec.field(default_factory=dict)


class ArtifactResult(msgspec.Struct, frozen=True):
    """What the probe found for one artifact (`file` as the bundle names it)."""

    file: str
    backend: str
    outcome: Literal["ok", "skipped", "failed"]
    detail: str


class ProbeLimits(NamedTuple):
    """Bounds of the probe process: wall time (and CPU time), address space."""

    timeout_s: float = 120.0
    memory_mb: int = 2048


class ProbationError(BundleError):
    """A bundle failed probation; the message starts with the file at fault."""

    def __init__(self, file: str, detail: str) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = file


def read_golden(path: Path) -> Golden:
    """Read a golden pair; BundleError naming the file when it is malformed."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Golden)
    except (OSError, msgspec.DecodeError) as exc:
        raise BundleError(f"golden pair {path}: {exc}") from exc


def make_golden(manifest_path: Path, x: np.ndarray) -> Golden:
    """Run every artifact whose runtime is here on `x` (normalised windows); record the outputs.

    An artifact that does not run here is a BundleError: a release that fails on the build
    machine is not shipped. An artifact whose runtime is not installed here gets no output
    of its own and is held to the fp32 reference on the gateway.
    """
    from edge_agent.daemon.bundles.probe import backend_for, run_artifact  # noqa: PLC0415
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415 - heavy imports

    manifest = load_manifest(manifest_path)
    x = x.astype(np.float32)
    own: dict[str, Expected] = {}
    reference: Any = None
    for art in manifest.artifacts:
        if backend_for(art.format, art.precision)[1]:
            log.warning("golden_artifact_skipped", file=art.file, runtime="not installed here")
            continue
        try:
            out = run_artifact(manifest, art.format, art.precision, x)
        except EdgeAgentError as exc:
            raise BundleError(f"model file {art.file} does not run here: {exc}") from exc
        tol = TOLERANCE[art.precision]
        own[art.file] = Expected(
            score=out.score.tolist(),
            probs=out.probs.tolist(),
            contrib=out.contrib.tolist(),
            atol=tol.atol,
            rtol=tol.rtol,
        )
        if reference is None or (art.precision == "fp32" and reference[0] != "fp32"):
            reference = (art.precision, out)
    if reference is None:
        raise BundleError(f"{manifest_path}: no artifact of the model can run here")
    ref = reference[1]
    tol = TOLERANCE["fp32"]
    return Golden(
        input=x.tolist(),
        score=ref.score.tolist(),
        probs=ref.probs.tolist(),
        atol=tol.atol,
        rtol=tol.rtol,
        artifacts=own,
    )


def _parse(stdout: bytes | str | None) -> tuple[list[ArtifactResult], str | None]:
    """The child's results, and the file it had begun without a result (if it died there)."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout or ""
    results: list[ArtifactResult] = []
    begun: str | None = None
    for line in text.splitlines():
        if not line.startswith(PROBE_MARK):
            continue  # a runtime's own chatter
        try:
            item = msgspec.json.decode(line[len(PROBE_MARK) :])
            if isinstance(item, dict) and isinstance(item.get("begin"), str):
                begun = item["begin"]
                continue
            results.append(msgspec.convert(item, ArtifactResult))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        begun = None
    return results, begun


def _death(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def check_models(bundle: Bundle, limits: ProbeLimits | None = None) -> list[ArtifactResult]:
    """Prove each model artifact of `bundle` on the golden input; ProbationError if one fails.

    Returns one result per artifact (outcome ok or skipped) when none failed.
    """
    limits = limits or ProbeLimits()
    model = PurePosixPath(bundle.manifest.model)
    prefix = "" if str(model.parent) == "." else f"{model.parent}/"
    cmd = [
        sys.executable, "-m", "edge_agent.daemon.bundles.probe",
        "--model", str(bundle.model_manifest_path), "--model-name", bundle.manifest.model,
        "--golden", str(bundle.golden_path), "--golden-name", bundle.manifest.golden,
        "--prefix", prefix, "--memory-mb", str(limits.memory_mb),
        "--cpu-s", str(max(1, int(limits.timeout_s))),
    ]  # fmt: skip
    try:
        proc = subprocess.run(  # noqa: S603 - our own module, with paths we made
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=limits.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        _, begun = _parse(exc.stdout)
        raise ProbationError(
            begun or bundle.manifest.model,
            f"probation timed out after {limits.timeout_s:g} s (EDGE_UPDATES__PROBE_TIMEOUT_S)",
        ) from exc
    except OSError as exc:
        raise BundleError(f"probation: cannot start the probe ({exc})") from exc
    results, begun = _parse(proc.stdout)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip()[-_TAIL:]
        raise ProbationError(
            begun or bundle.manifest.model,
            f"the probe died ({_death(proc.returncode)}) running it: {tail}",
        )
    for r in results:
        log.info(
            "bundle_probation_artifact",
            file=r.file,
            backend=r.backend,
            outcome=r.outcome,
            detail=r.detail,
        )
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        more = f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else ""
        raise ProbationError(failed[0].file, f"{failed[0].detail}{more}")
    if not any(r.outcome == "ok" for r in results):
        raise ProbationError(bundle.manifest.model, "no artifact of the model can run here")
    return results


def check_golden(bundle: Bundle, limits: ProbeLimits | None = None) -> None:
    """Raise ProbationError unless every artifact of the bundle reproduces its golden outputs."""
    check_models(bundle, limits)


def check_rules(bundle: Bundle) -> None:
    """Raise BundleError unless the bundle's rule packs load and compile."""
    from edge_agent.rules.pack import load_pack  # noqa: PLC0415

    try:
        load_pack(bundle.rule_pack_paths)
    except EdgeAgentError as exc:
        raise BundleError(f"rule packs do not compile: {exc}") from exc


def check_bundle(bundle: Bundle, limits: ProbeLimits | None = None) -> list[ArtifactResult]:
    """Everything probation checks before the bundle is trusted with live data."""
    check_rules(bundle)
    return check_models(bundle, limits)
