"""The model manifest: what the model expects, what it returns, and its verified files."""

from __future__ import annotations

import hashlib
import math
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.core.assets import Role
from edge_agent.core.errors import ModelError

SCHEMA = "edge-agent/model-manifest/v1"
MANIFEST_FILE = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Model):
    """Per-signal mean and std: the scorer feeds the model (x - mean) / std."""

    mean: list[float] = Field(description="Mean of each signal, in the order of `signals`.")
    std: list[float] = Field(description="Standard deviation of each signal.")


class TensorSpec(_Model):
    """The model's input tensor."""

    name: str = Field(description="Input name in the graph.")
    dtype: Literal["float32"] = Field(description="Element type.")
    shape: list[int | None] = Field(description="Shape; null is the batch dimension.")


class Artifact(_Model):
    """One model file, verified by hash and size before it is loaded."""

    file: str = Field(description="File name, relative to the manifest's directory.")
    format: Literal["onnx", "tflite"] = Field(description="Runtime format.")
    precision: Literal["fp32", "int8"] = Field(description="Numeric precision.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the file.")
    bytes: int = Field(gt=0, description="File size in bytes.")
    threshold: float | None = Field(
        None, description="Threshold calibrated for this file; null means the manifest's."
    )


class Training(_Model):
    """How the model was made."""

    script: str = Field(description="Script that produced the artifacts.")
    seeds: dict[str, int | list[int]] = Field(description="Seeds of the training run.")
    metrics: dict[str, float | int | str] = Field(description="Figures from the run.")


class Adapt(_Model):
    """How a learned model's baseline follows a healthy asset (scorer and advisor apply it)."""

    alpha: float = Field(
        ge=0, lt=1, description="Baseline EWMA rate per window: mu += alpha * (mean - mu)."
    )
    below: float = Field(
        gt=0, le=1, description="The baseline adapts only while score / threshold is below this."
    )


class Manifest(_Model):
    """`manifest.json` of a model: input and output schema plus its artifacts."""

    schema_: Literal["edge-agent/model-manifest/v1"] = Field(
        alias="schema", description="Manifest format."
    )
    name: str = Field(description="Model name.")
    version: str = Field(description="Model version (semver).")
    signals: list[str] = Field(min_length=1, description="Input signals, in tensor order.")
    rate_hz: float = Field(gt=0, description="Sample rate the windows are cut at.")
    window: int = Field(gt=1, description="Samples per window.")
    hop: int = Field(gt=0, description="Samples between the starts of consecutive windows.")
    normalisation: Normalisation = Field(description="Input normalisation.")
    classes: list[str] = Field(min_length=2, description="Classes of `probs`, in order.")
    threshold: float = Field(gt=0, description="`score > threshold` means anomalous.")
    input: TensorSpec = Field(description="Input tensor.")
    outputs: dict[str, list[int | None]] = Field(description="Output name -> shape.")
    artifacts: list[Artifact] = Field(min_length=1, description="Model files.")
    training: Training = Field(description="Provenance.")
    kind: Literal["classifier", "learned"] = Field(
        "classifier",
        description="`classifier`: trained with named fault classes; `learned`: fitted on one "
        "machine's normal operation, explaining by signal and direction only.",
    )
    roles: list[Role] | None = Field(None, description="Role of each signal, in signal order.")
    units: list[str] | None = Field(None, description="Unit of each signal, in signal order.")
    adapt: Adapt | None = Field(None, description="Baseline adaptation of a learned model.")
    description: str | None = Field(None, description="What the model is, in words.")
    directory: Path = Field(Path(), exclude=True, description="Where the files are.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def artifact(self, fmt: str, precision: str = "fp32") -> Path:
        """Return the path of the artifact in `fmt` at `precision`; ModelError if none."""
        return self.directory / self.artifact_entry(fmt, precision).file

    def artifact_entry(self, fmt: str, precision: str = "fp32") -> Artifact:
        """Return the manifest entry of the artifact in `fmt` at `precision`."""
        for a in self.artifacts:
            if a.format == fmt and a.precision == precision:
                return a
        have = ", ".join(f"{a.format}/{a.precision}" for a in self.artifacts)
        raise ModelError(f"model {self.name} has no {fmt}/{precision} artifact (has: {have})")

    def threshold_for(self, fmt: str, precision: str = "fp32") -> float:
        """The calibrated threshold of one artifact (the manifest's unless it states its own)."""
        own = self.artifact_entry(fmt, precision).threshold
        return self.threshold if own is None else own


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_manifest_path() -> Path:
    """The manifest of the model shipped inside the package."""
    ref = resources.files("edge_agent.models") / "artifacts" / MANIFEST_FILE
    return Path(str(ref))


def load_manifest(path: Path | None = None) -> Manifest:
    """Read, validate and verify a manifest; None means the model shipped with the agent.

    Every artifact's size and SHA-256 is checked; a mismatch is a ModelError naming the file.
    """
    where = default_manifest_path() if path is None else Path(path)
    try:
        raw = where.read_bytes()
    except OSError as exc:
        raise ModelError(f"EDGE_MODEL__MANIFEST={where}: cannot read ({exc.strerror})") from exc
    try:
        manifest = Manifest.model_validate_json(raw).model_copy(update={"directory": where.parent})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ModelError(f"EDGE_MODEL__MANIFEST={where}: invalid manifest: {problems}") from exc
    if manifest.classes[0] != "normal":
        raise ModelError(f"{where}: the first class must be 'normal', got {manifest.classes[0]!r}")
    if len(manifest.normalisation.mean) != len(manifest.signals) or len(
        manifest.normalisation.std
    ) != len(manifest.signals):
        raise ModelError(f"{where}: normalisation needs one mean and one std per signal")
    values = [*manifest.normalisation.mean, *manifest.normalisation.std]
    if not all(math.isfinite(v) for v in values) or min(manifest.normalisation.std) <= 0:
        raise ModelError(f"{where}: normalisation must be finite, with every std above zero")
    _check_learned(manifest, where)
    for art in manifest.artifacts:
        verify_artifact(manifest.directory / art.file, art)
    return manifest


def _check_learned(manifest: Manifest, where: Path) -> None:
    """The per-signal lists match the signals; a learned model states its roles and adaptation."""
    for field in ("roles", "units"):
        values = getattr(manifest, field)
        if values is not None and len(values) != len(manifest.signals):
            raise ModelError(
                f"{where}: {field} has {len(values)} entries for {len(manifest.signals)} signals"
            )
    if manifest.kind == "learned" and (manifest.roles is None or manifest.adapt is None):
        raise ModelError(f"{where}: a learned model needs `roles` and `adapt`")


def verify_artifact(path: Path, art: Artifact) -> None:
    """Raise ModelError naming `path` unless its size and SHA-256 match the manifest."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"model file {path}: cannot read ({exc.strerror})") from exc
    if size != art.bytes:
        raise ModelError(f"model file {path}: {size} bytes, the manifest says {art.bytes}")
    digest = sha256_file(path)
    if digest != art.sha256:
        raise ModelError(
            f"model file {path}: sha256 {digest} does not match the manifest's {art.sha256}"
        )
