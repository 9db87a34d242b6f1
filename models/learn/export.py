"""Write a fitted learned model: ONNX and TFLite, fp32 and int8, then the manifest.

The graph takes the normalised window [N, W, S] (the scorer subtracts the baseline and
divides by s*t, both in the manifest) and returns
    contrib [N, S] = mean over the window         (signed: positive = above normal)
    score   [N]    = max_j |contrib_j|            (anomalous when > 1, the manifest threshold)
    probs   [N, 2] = [1 - u, u], u = min(1, score) over classes ["normal", "unknown"]
It has no weights: every number of the model is in the manifest. So the int8 files (kept so
that a precision setting of int8 finds a file) have nothing to quantise and compute exactly
what the fp32 ones do: the ONNX one is onnxruntime's quantize_dynamic of the fp32 graph, the
TFLite one the same file as the fp32.

No TensorFlow here: both TFLite files are a copy of one template shipped in the package,
models/artifacts/learned-template.tflite, the graph above with every input dimension open
([-1, -1, -1]; LiteRT resizes it to the manifest's [N, W, S]). It is built once with
TensorFlow by models/training/learned_template.py (`make model`), and checked against
`TEMPLATE` (sha256 and size) before each copy.

Rules kept: the same fit writes byte-identical files (no times, no random names); each file
is written to a temporary name and renamed, the manifest last, and the result is read back
with `load_manifest`, which checks every file's size and SHA-256.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from edge_agent.core.errors import ModelError
from edge_agent.models.learn.fit import ADAPT_ALPHA, ADAPT_BELOW, Fitted, Progress
from edge_agent.models.manifest import (
    MANIFEST_FILE,
    SCHEMA,
    Adapt,
    Artifact,
    Manifest,
    Normalisation,
    TensorSpec,
    Training,
    load_manifest,
    sha256_file,
    verify_artifact,
)

log = structlog.get_logger(__name__)

OPSET = 17
CLASSES = ("normal", "unknown")
OUTPUTS = ("score", "contrib", "probs")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # the model's files are named after it
MAX_BYTES = 100_000  # a learned model's file must stay this small (it is a few hundred bytes)
TfLite = Literal["auto", "on", "off"]  # "auto" and "on" alike write the TFLite files
# The TFLite template (models/training/learned_template.py builds it; TensorFlow 2.21.0).
TEMPLATE = Artifact(
    file="learned-template.tflite",
    format="tflite",
    precision="fp32",
    sha256="403c1ec0207bb9fd92d11bcc332c85bacbf428d02e2ec99dcfaf7a0815192867",
    bytes=2028,
)
DESCRIPTION = (
    "Learned from one machine's normal operation: score = the largest |window mean - baseline| "
    "/ alarm distance over the signals; contrib = that signed distance per signal; probs = "
    "[1 - u, u], u = min(1, score). The graph has no weights (the baseline and alarm "
    "distances are the normalisation above), so the int8 files equal fp32 numerically."
)


def onnx_graph(window: int, signals: int, name: str = "learned") -> bytes:
    """Serialised ONNX model of the learned detector for windows [N, window, signals]."""
    try:
        import onnx  # noqa: PLC0415 - the learn extra only
        from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415
    except ImportError as exc:
        raise ModelError(
            f"writing a learned model needs the `learn` extra (pip install "
            f"'edge-agent[learn]'): {exc}"
        ) from exc

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [out], name=out, **attrs)

    nodes = [
        node("ReduceMean", ["window"], "contrib", axes=[1], keepdims=0),
        node("Abs", ["contrib"], "abs_contrib"),
        node("ReduceMax", ["abs_contrib"], "score", axes=[1], keepdims=0),
        node("Min", ["score", "one"], "unknown"),
        node("Unsqueeze", ["unknown", "axis1"], "unknown_col"),
        node("Sub", ["one", "unknown_col"], "normal_col"),
        node("Concat", ["normal_col", "unknown_col"], "probs", axis=1),
    ]
    consts = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    shapes: dict[str, list[str | int]] = {
        "window": ["N", window, signals],
        "score": ["N"],
        "contrib": ["N", signals],
        "probs": ["N", len(CLASSES)],
    }
    typed = {k: helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()}
    graph = helper.make_graph(nodes, name, [typed["window"]], [typed[k] for k in OUTPUTS], consts)
    opsets = [helper.make_opsetid("", OPSET)]
    # IR 8: readable by every onnxruntime >= 1.14
    model = helper.make_model(
        graph, opset_imports=opsets, producer_name="edge-agent models/learn", ir_version=8
    )
    onnx.checker.check_model(model, full_check=True)
    return bytes(model.SerializeToString())


class _QuietPreprocessHint(logging.Filter):
    """quantize_dynamic advises pre-processing on the root logger; this graph needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def onnx_int8(fp32: bytes) -> bytes:
    """The fp32 graph through onnxruntime's quantize_dynamic (no weights: nothing changes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415

    quiet = _QuietPreprocessHint()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="edge-learn-") as tmp:
            src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "int8.onnx")
            src.write_bytes(fp32)
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
            return dst.read_bytes()
    finally:
        root.removeFilter(quiet)


def tflite_template(path: Path | None = None) -> bytes:
    """The TFLite template's bytes, once its size and sha256 match `TEMPLATE`."""
    if path is None:
        path = Path(str(resources.files("edge_agent.models") / "artifacts" / TEMPLATE.file))
    verify_artifact(path, TEMPLATE)  # ModelError naming the file
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    """Write `data` to a temporary name beside `path`, then rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def _files(fitted: Fitted, name: str, tflite: TfLite) -> Iterator[tuple[str, str, str, bytes]]:
    """(file, format, precision, bytes) of every artifact."""
    s = len(fitted.signals)
    fp32 = onnx_graph(fitted.window, s, name)
    yield f"{name}.fp32.onnx", "onnx", "fp32", fp32
    yield f"{name}.int8.onnx", "onnx", "int8", onnx_int8(fp32)
    if tflite == "off":
        return
    template = tflite_template()
    yield f"{name}.fp32.tflite", "tflite", "fp32", template
    yield f"{name}.int8.tflite", "tflite", "int8", template


def manifest_for(fitted: Fitted, artifacts: list[Artifact], name: str, version: str) -> Manifest:
    """The manifest of a learned model (the schema of models/manifest.py)."""
    s, f32 = len(fitted.signals), np.float32
    metrics: dict[str, float | int | str] = {
        "rows": fitted.rows,
        "windows": fitted.windows,
        "warnings": len(fitted.warnings),
    }
    for sig in fitted.per_signal:
        metrics[f"{sig.name}.s"] = float(str(f32(sig.s)))
        metrics[f"{sig.name}.t"] = float(str(f32(sig.t)))
        metrics[f"{sig.name}.limited_by"] = sig.limited_by
        metrics[f"{sig.name}.quantised"] = int(sig.quantised)
    return Manifest(
        schema_=SCHEMA,
        name=name,
        version=version,
        kind="learned",
        description=DESCRIPTION,
        signals=list(fitted.signals),
        roles=list(fitted.roles),  # fit() checked every role against Role
        units=list(fitted.units),
        rate_hz=fitted.rate_hz,
        window=fitted.window,
        hop=1,
        normalisation=Normalisation(
            # The shortest decimal that is the same float32: what the scorer will use.
            mean=[float(str(v)) for v in fitted.mean.astype(f32)],
            std=[float(str(v)) for v in fitted.std.astype(f32)],
        ),
        classes=list(CLASSES),
        threshold=1.0,
        adapt=Adapt(alpha=ADAPT_ALPHA, below=ADAPT_BELOW),
        input=TensorSpec(name="window", dtype="float32", shape=[None, fitted.window, s]),
        outputs={"score": [None], "contrib": [None, s], "probs": [None, len(CLASSES)]},
        artifacts=artifacts,
        training=Training(
            script="edge_agent.models.learn", seeds={"seed": fitted.seed}, metrics=metrics
        ),
    )


def write(
    fitted: Fitted,
    out_dir: Path | str,
    *,
    name: str = "learned",
    version: str = "1.0.0",
    tflite: TfLite = "auto",
    progress: Progress | None = None,
) -> Manifest:
    """Write the model files and `manifest.json` into `out_dir`; return the verified manifest."""
    if not NAME.fullmatch(name):
        raise ModelError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    say = progress or (lambda _f, _s: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = []
    say(0.0, "writing model files")
    for file, fmt, precision, data in _files(fitted, name, tflite):
        if len(data) > MAX_BYTES:
            raise ModelError(f"{file}: {len(data)} bytes, more than {MAX_BYTES}")
        _write(out / file, data)
        artifacts.append(
            Artifact(
                file=file,
                format=fmt,
                precision=precision,
                sha256=sha256_file(out / file),
                bytes=len(data),
            )
        )
    say(0.8, "writing the manifest")
    manifest = manifest_for(fitted, artifacts, name, version)
    text = manifest.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"
    _write(out / MANIFEST_FILE, text.encode())
    say(1.0, "written")
    return load_manifest(out / MANIFEST_FILE)
