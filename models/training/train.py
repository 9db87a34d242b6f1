"""Train the pump-fault model from simulator data and write its artifacts and manifest.

    python -m edge_agent.models.training.train [--out DIR] [--scale 1.0] [--seed 0] [--no-tflite]

Steps: simulate the training set, fit the per-signal normalisation, fit the autoencoder on
normal windows, scale its residuals, calibrate the threshold on held-out normal plants,
fit the classifier on visible-fault, synthetic-unknown and normal windows, then export the
same weights to ONNX (and TFLite when TensorFlow is installed), with int8 variants, and
write `manifest.json` with every file's sha256 and size. Everything is seeded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from edge_agent.models.base import Backend
from edge_agent.models.manifest import SCHEMA
from edge_agent.models.training import network
from edge_agent.models.training.dataset import CLASSES, Windows, trace_windows
from edge_agent.simulator import scenarios
from edge_agent.simulator.plant import SIGNALS, Trace

WINDOW = 30
HOP = 5
RATE_HZ = 1.0
NAME = "pump-fault"
VERSION = "1.0.0"
# The threshold sits this far above the largest score of any held-out normal window.
THRESHOLD_MARGIN = 1.15
# Fault windows enter the classifier's training once they score above this fraction of the
# threshold: earlier ones are indistinguishable from normal and would only teach noise.
CLASS_FLOOR = 0.8
TRANSIENT_WEIGHT = 40.0
AE_HIDDEN = (32, 8, 32)
# Fast faults teach the classifier only their first quarter hour: that is when the first
# recommendation is made, and a long settled tail (an overheated motor at a flat, high
# temperature) would look like a slow fault and blur the onset signature.
EARLY_S = 900
SLOW = frozenset({"bearing_wear", "drifting_sensor"})
DEFAULT_OUT = Path(__file__).parent.parent / "artifacts"


def progress(msg: str) -> None:
    """Print one progress line with the time since start."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


_T0 = time.perf_counter()


class Data(NamedTuple):
    """Windows of a set of scenarios, stacked."""

    x: np.ndarray  # raw float32 [N, W, S]
    label: np.ndarray  # [N]
    visible: np.ndarray  # [N]
    early: np.ndarray  # [N] within EARLY_S of the fault first showing (all of a slow fault)


def simulate_set(sets: Sequence[scenarios.Scenario], what: str) -> list[Trace]:
    """Simulate scenarios, with progress."""
    traces = []
    for i, sc in enumerate(sets):
        traces.append(sc.run())
        if (i + 1) % 10 == 0 or i + 1 == len(sets):
            progress(f"simulated {what} {i + 1}/{len(sets)}")
    return traces


def window_set(traces: Sequence[Trace], norm_std: np.ndarray) -> Data:
    """Cut and label the windows of `traces`, stacked."""
    parts: list[Windows] = []
    early: list[np.ndarray] = []
    for trace in traces:
        win = trace_windows(trace, WINDOW, HOP, norm_std)
        parts.append(win)
        mark = np.ones(win.end.shape, bool)
        if trace.fault is not None and trace.fault.kind not in SLOW and win.visible.any():
            first = win.end[np.argmax(win.visible)]
            mark = win.end <= first + EARLY_S
        early.append(mark)
    return Data(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.label for p in parts]),
        np.concatenate([p.visible for p in parts]),
        np.concatenate(early),
    )


def synthetic_unknown(x: np.ndarray, rng: np.random.Generator, norm_std: np.ndarray) -> np.ndarray:
    """Anomalies outside the fault library: oscillations, spikes and opposed offsets."""
    out = x.copy()
    n = out.shape[0]
    t = np.arange(WINDOW, dtype=np.float32)
    for j in range(n):
        kind = j % 3
        k = int(rng.integers(len(SIGNALS)))
        amp = float(norm_std[k]) * float(rng.uniform(0.4, 1.0))
        if kind == 0:
            period = float(rng.uniform(3.0, 10.0))
            out[j, :, k] += amp * np.sin(2 * np.pi * t / period)
        elif kind == 1:
            idx = rng.choice(WINDOW, size=3, replace=False)
            out[j, idx, k] += amp * 3.0 * rng.choice([-1.0, 1.0], size=3)
        else:
            k2 = (k + 1 + int(rng.integers(len(SIGNALS) - 1))) % len(SIGNALS)
            out[j, :, k] += amp
            out[j, :, k2] -= float(norm_std[k2]) * float(rng.uniform(0.4, 1.0))
    return out


def _solver(seed: int, epochs: int) -> dict[str, Any]:
    """How both networks train: Adam on mini-batches, at most `epochs`, seeded."""
    return {
        "batch_size": 256,
        "learning_rate_init": 2e-3,
        "max_iter": epochs,
        "random_state": seed,
        "tol": 1e-6,
    }


class _Estimator(Protocol):
    def fit(self, inputs: np.ndarray, targets: np.ndarray) -> object:
        """Train on `inputs` towards `targets` (scikit-learn's)."""
        ...


def _fit(model: _Estimator, inputs: np.ndarray, targets: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter is expected
        model.fit(inputs, targets)


def fit_autoencoder(f: np.ndarray, seed: int, epochs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fit the feature autoencoder; return its four (weight, bias) layers."""
    from sklearn.neural_network import MLPRegressor  # noqa: PLC0415 - train extra only

    ae = MLPRegressor(
        hidden_layer_sizes=AE_HIDDEN,
        activation="tanh",
        alpha=1e-4,
        n_iter_no_change=15,
        verbose=False,
        **_solver(seed, epochs),
    )
    _fit(ae, f, f)
    progress(f"autoencoder: {ae.n_iter_} epochs, final loss {ae.loss_:.5f}")
    return list(zip(ae.coefs_, ae.intercepts_, strict=True))


def fit_classifier(
    inputs: np.ndarray, labels: np.ndarray, seed: int, epochs: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fit the classifier head; return its two (weight, bias) layers over all classes."""
    from sklearn.neural_network import MLPClassifier  # noqa: PLC0415 - train extra only

    # Balance the classes by resampling: normal windows outnumber each fault many times.
    rng = np.random.default_rng(seed)
    per_class = int(np.bincount(labels, minlength=len(CLASSES)).max())
    idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), size=per_class, replace=True)
            for c in range(len(CLASSES))
            if np.any(labels == c)
        ]
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(32,),
        activation="relu",
        alpha=1e-3,
        n_iter_no_change=10,
        **_solver(seed, epochs),
    )
    _fit(clf, inputs[idx], labels[idx])
    progress(f"classifier: {clf.n_iter_} epochs, final loss {clf.loss_:.4f}")
    w1, w2 = clf.coefs_
    b1, b2 = clf.intercepts_
    # Expand the output layer to every class; a class with no examples gets a logit of -30.
    full_w = np.zeros((w2.shape[0], len(CLASSES)))
    full_b = np.full(len(CLASSES), -30.0)
    for j, c in enumerate(clf.classes_):
        full_w[:, int(c)] = w2[:, j]
        full_b[int(c)] = b2[j]
    return [(w1, b1), (full_w, full_b)]


class Trained(NamedTuple):
    """The result of one training run."""

    weights: network.Weights
    mean: np.ndarray
    std: np.ndarray
    threshold: float
    metrics: dict[str, Any]
    calibration: np.ndarray  # normalised held-out normal windows, for per-artifact thresholds


class _Run:
    """One training run's state, so that each stage is a short method."""

    def __init__(self, scale: float, seed: int, epochs: int) -> None:
        self.scale, self.seed, self.epochs = scale, seed, epochs
        self.rng = np.random.default_rng(seed)
        traces = simulate_set(scenarios.training_set(scale), "training runs")
        samples = np.concatenate([t.values[t.label == 0] for t in traces])
        self.mean = samples.mean(axis=0)
        self.std = samples.std(axis=0)
        self.data = window_set(traces, self.std)
        self.xn = self.normalise(self.data.x)
        feats = network.raw_features(self.xn)
        self.normal = self.data.label == 0
        self.feat_mean = feats[self.normal].mean(axis=0)
        self.feat_std = feats[self.normal].std(axis=0) + 1e-6
        self.f = ((feats - self.feat_mean) / self.feat_std).astype(np.float32)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Apply the run's per-signal normalisation."""
        out: np.ndarray = ((x - self.mean) / self.std).astype(np.float32)
        return out

    def autoencoder(self) -> network.Weights:
        """Fit the autoencoder and the residual scale; the classifier is left empty."""
        f, normal_idx = self.f, np.flatnonzero(self.normal)
        # Load changes, stops and starts are a small share of normal time but most of its
        # variety: they are drawn several times more often, so the autoencoder learns them.
        moving = np.abs(f[normal_idx, 2 :: network.N_FEATURES]).max(axis=1) > 1.0
        weight = np.where(moving, TRANSIENT_WEIGHT, 1.0)
        size = min(normal_idx.size, int(60_000 * self.scale) + 5_000)
        fit_idx = self.rng.choice(normal_idx, size=size, p=weight / weight.sum())
        progress(f"fitting autoencoder on {fit_idx.size} normal windows")
        (e1w, e1b), (e2w, e2b), (d1w, d1b), (d2w, d2b) = fit_autoencoder(
            f[fit_idx], self.seed, self.epochs
        )
        n_in, n_cls = f.shape[1], len(CLASSES)
        w = network.Weights(
            feat_mean=self.feat_mean, feat_std=self.feat_std,
            enc1_w=e1w, enc1_b=e1b, enc2_w=e2w, enc2_b=e2b,
            dec1_w=d1w, dec1_b=d1b, dec2_w=d2w, dec2_b=d2b,
            resid_std=np.ones(n_in),
            cls1_w=np.zeros((2 * n_in, 1)), cls1_b=np.zeros(1),
            cls2_w=np.zeros((1, n_cls)), cls2_b=np.zeros(n_cls),
        )  # fmt: skip
        resid = f - network.autoencode(w, np.clip(f, -network.AE_CLIP, network.AE_CLIP))
        w.resid_std = resid[self.normal].std(axis=0) + 1e-6
        return w.as_float32()

    def calibrate(self, w: network.Weights) -> tuple[float, np.ndarray]:
        """Threshold from held-out normal plants; also return their scores."""
        traces = simulate_set(scenarios.calibration_set(self.scale), "calibration runs")
        self.cal_xn = self.normalise(window_set(traces, self.std).x)
        scores = network.forward(w, self.cal_xn).score
        threshold = float(scores.max()) * THRESHOLD_MARGIN
        progress(
            f"threshold {threshold:.3f} (held-out normal: p99.9 "
            f"{np.quantile(scores, 0.999):.3f}, max {scores.max():.3f})"
        )
        return threshold, scores

    def inputs(self, w: network.Weights, xn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classifier inputs [features, residual z-scores] and the scores of windows `xn`."""
        f = ((network.raw_features(xn) - w.feat_mean) / w.feat_std).astype(np.float32)
        r = network.residuals(w, f)
        return np.concatenate([f, r], axis=1), network.forward(w, xn).score

    def classifier(self, w: network.Weights, threshold: float) -> tuple[network.Weights, float]:
        """Fit the classifier head into `w`; return it and the training accuracy."""
        inputs, scores = self.inputs(w, self.xn)
        floor = CLASS_FLOOR * threshold
        keep = self.normal | (self.data.visible & (scores > floor) & self.data.early)
        src = self.rng.choice(np.flatnonzero(self.normal), size=max(500, int(4_000 * self.scale)))
        unknown_in, unknown_scores = self.inputs(
            w, self.normalise(synthetic_unknown(self.data.x[src], self.rng, self.std))
        )
        odd = unknown_scores > floor
        x = np.concatenate([inputs[keep], unknown_in[odd]]).astype(np.float32)
        y = np.concatenate([self.data.label[keep], np.full(int(odd.sum()), len(CLASSES) - 1)])
        counts = np.bincount(y, minlength=len(CLASSES))
        progress(
            "classifier windows: "
            + ", ".join(f"{c}={n}" for c, n in zip(CLASSES, counts, strict=True))
        )
        (c1w, c1b), (c2w, c2b) = fit_classifier(x, y, self.seed, self.epochs)
        w.cls1_w, w.cls1_b, w.cls2_w, w.cls2_b = c1w, c1b, c2w, c2b
        w = w.as_float32()
        pred = network.forward(w, self.xn[keep]).probs.argmax(axis=1)
        return w, float(np.mean(pred == self.data.label[keep]))


def train(scale: float = 1.0, seed: int = 0, epochs: int = 300) -> Trained:
    """Train the model on simulator data; `scale` < 1 trains a reduced model."""
    run = _Run(scale, seed, epochs)
    w = run.autoencoder()
    threshold, cal_scores = run.calibrate(w)
    w, acc = run.classifier(w, threshold)
    metrics = {
        "train_windows": int(run.xn.shape[0]),
        "classifier_train_accuracy": round(acc, 4),
        "calibration_windows": int(cal_scores.size),
        "calibration_max_score": round(float(cal_scores.max()), 5),
        "parameters": w.parameter_count(),
    }
    return Trained(w, run.mean, run.std, threshold, metrics, run.cal_xn)


def file_entry(
    path: Path, fmt: str, precision: str, threshold: float | None = None
) -> dict[str, Any]:
    """The manifest entry of one artifact."""
    data = path.read_bytes()
    entry: dict[str, Any] = {
        "file": path.name,
        "format": fmt,
        "precision": precision,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    if threshold is not None:
        entry["threshold"] = threshold
    return entry


def manifest_dict(
    t: Trained, artifacts: list[dict[str, Any]], seed: int, scale: float
) -> dict[str, Any]:
    """The manifest of a training run."""
    return {
        "schema": SCHEMA,
        "name": NAME,
        "version": VERSION,
        "signals": list(SIGNALS),
        "rate_hz": RATE_HZ,
        "window": WINDOW,
        "hop": HOP,
        "normalisation": {
            "mean": [round(float(v), 6) for v in t.mean],
            "std": [round(float(v), 6) for v in t.std],
        },
        "classes": list(CLASSES),
        "threshold": round(t.threshold, 6),
        "input": {"name": "window", "dtype": "float32", "shape": [None, WINDOW, len(SIGNALS)]},
        "outputs": {
            "score": [None],
            "contrib": [None, len(SIGNALS)],
            "probs": [None, len(CLASSES)],
        },
        "artifacts": artifacts,
        "training": {
            "script": "models/train.py",
            "seeds": {
                "seed": seed,
                "train_from": scenarios.TRAIN_SEED0,
                "calibration_from": scenarios.CALIBRATION_SEED0,
                "eval_from": scenarios.EVAL_SEED0,
            },
            "metrics": {**t.metrics, "scale": scale},
        },
    }


def artifact_threshold(backend: Backend, calibration: np.ndarray) -> float:
    """Threshold of one artifact on its own runtime: margin x its largest held-out score."""
    top = max(
        float(backend.run(calibration[i : i + 1024]).score.max())
        for i in range(0, len(calibration), 1024)
    )
    return round(top * THRESHOLD_MARGIN, 6)


def export(t: Trained, out: Path, tflite: bool) -> list[dict[str, Any]]:
    """Write every artifact of a training run; return their manifest entries."""
    from edge_agent.models.onnx import OnnxBackend  # noqa: PLC0415
    from edge_agent.models.training import export_onnx  # noqa: PLC0415 - needs the train extra

    files: list[tuple[Path, str, str]] = []
    onnx_fp32 = export_onnx.write(t.weights, WINDOW, len(SIGNALS), out / f"{NAME}.fp32.onnx")
    files.append((onnx_fp32, "onnx", "fp32"))
    onnx_int8 = export_onnx.write_int8(onnx_fp32, out / f"{NAME}.int8.onnx")
    files.append((onnx_int8, "onnx", "int8"))
    if tflite:
        from edge_agent.models.training import export_tflite  # noqa: PLC0415 - needs TensorFlow

        fp32 = export_tflite.build_fp32(t.weights, WINDOW, len(SIGNALS))
        (out / f"{NAME}.fp32.tflite").write_bytes(fp32)
        (out / f"{NAME}.int8.tflite").write_bytes(export_tflite.build_int8(fp32))
        files.append((out / f"{NAME}.fp32.tflite", "tflite", "fp32"))
        files.append((out / f"{NAME}.int8.tflite", "tflite", "int8"))
    entries = []
    for path, fmt, precision in files:
        backend: Backend
        if fmt == "onnx":
            backend = OnnxBackend(path, ("CPUExecutionProvider",))
        else:
            from edge_agent.models.litert import LiteRtBackend  # noqa: PLC0415

            backend = LiteRtBackend(path, signals=len(SIGNALS), classes=len(CLASSES))
        threshold = artifact_threshold(backend, t.calibration)
        entries.append(file_entry(path, fmt, precision, threshold))
        progress(f"wrote {path.name} ({path.stat().st_size} bytes, threshold {threshold})")
    return entries


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: train and write the artifacts and the manifest."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="artifact directory")
    parser.add_argument("--scale", type=float, default=1.0, help="size of the training set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fits")
    parser.add_argument("--epochs", type=int, default=300, help="most epochs per fit")
    parser.add_argument("--no-tflite", action="store_true", help="skip the TFLite artifacts")
    args = parser.parse_args(argv)
    t = train(args.scale, args.seed, args.epochs)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    artifacts = export(t, out, tflite=not args.no_tflite)
    manifest = manifest_dict(t, artifacts, args.seed, args.scale)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    progress(f"wrote {out / 'manifest.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
