"""The pump-fault network: in-graph window features, an autoencoder and a classifier head.

This module is the single definition of the maths. `forward` is the numpy reference that
training uses; the ONNX and TFLite exporters build the same computation from the same
`Weights`, and the parity tests hold all three together.

Input: a window already normalised per signal, float32 [N, W, S].
Features per signal (S x 4): mean, log standard deviation, least-squares slope, log mean
absolute first difference (the roughness that tells noise from trend, and a frozen sensor
from a live one). They are standardised with constants from the normal training windows.
Autoencoder: features -> tanh -> tanh (bottleneck) -> tanh -> features. It learns the
load-conditioned normal manifold (flow, pressure, current and vibration follow speed,
temperature lags current). Residuals are scaled by their normal spread, so each is a
z-score.
- contrib[k]: root mean square of signal k's residual z-scores, signed by the residual of
  its mean (positive: the signal reads above what the rest of the window implies).
- score: the largest |contrib|. A fault usually moves one or two signals; a mean over all
  of them would dilute it, while load transients spread their error over every signal.
- probs: softmax of a one-hidden-layer ReLU classifier over [features, residuals].
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from edge_agent.models.base import ModelOutput

N_FEATURES = 4  # per signal: mean, log std, slope, log roughness
STD_EPS = 1e-8  # keeps sqrt differentiable and finite on a frozen signal
LOG_EPS = 1e-3  # floor of the log features: a frozen signal reads log(1e-3), not -inf
# The autoencoder sees its input clipped to this many feature stds: beyond it a window is
# anomalous anyway (the residual uses the unclipped features), and a bounded input lets the
# int8 model keep a fine scale for normal windows.
AE_CLIP = 30.0

F32 = np.float32
Array = np.ndarray


@dataclass
class Weights:
    """Everything the graph needs, as float32 arrays; dense layers are (in, out)."""

    feat_mean: Array  # [S*4]
    feat_std: Array  # [S*4]
    enc1_w: Array
    enc1_b: Array
    enc2_w: Array
    enc2_b: Array
    dec1_w: Array
    dec1_b: Array
    dec2_w: Array
    dec2_b: Array
    resid_std: Array  # [S*4]
    cls1_w: Array
    cls1_b: Array
    cls2_w: Array
    cls2_b: Array

    def as_float32(self) -> Weights:
        """Return a copy with every array as contiguous float32."""
        arrays = {f.name: np.ascontiguousarray(getattr(self, f.name), F32) for f in fields(self)}
        return Weights(**arrays)

    def parameter_count(self) -> int:
        """Number of scalars in the model."""
        return sum(int(np.asarray(getattr(self, f.name)).size) for f in fields(self))


def slope_weights(window: int) -> Array:
    """Return [W] weights whose dot product with a series is its least-squares slope."""
    t = np.arange(window, dtype=np.float64)
    centred = t - t.mean()
    out: Array = (centred / float(np.sum(centred**2))).astype(F32)
    return out


def raw_features(x: Array) -> Array:
    """Return the unstandardised features [N, S*4], ordered signal-major (s0f0, s0f1, ...)."""
    x = np.asarray(x, dtype=F32)
    n, window, signals = x.shape
    xt = np.transpose(x, (0, 2, 1))  # [N, S, W]
    mean = xt.mean(axis=-1)
    # Spread and slope are taken relative to the window's first sample: the same numbers,
    # without the float32 cancellation of a large level (an overheated motor) against a
    # small noise, which would make runtimes disagree in the 4th decimal of the score.
    d = xt - xt[..., :1]
    centred = d - d.mean(axis=-1, keepdims=True)
    std = np.sqrt(np.mean(centred * centred, axis=-1) + F32(STD_EPS))
    slope = np.sum(d * slope_weights(window), axis=-1)
    rough = np.mean(np.abs(xt[..., 1:] - xt[..., :-1]), axis=-1)
    feats = np.stack(
        [mean, np.log(std + F32(LOG_EPS)), slope, np.log(rough + F32(LOG_EPS))], axis=-1
    )
    return feats.reshape(n, signals * N_FEATURES).astype(F32)


def _softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: Array = e / e.sum(axis=1, keepdims=True)
    return out


def autoencode(w: Weights, f: Array) -> Array:
    """Return the autoencoder's reconstruction of standardised features `f`."""
    h = np.tanh(f @ w.enc1_w + w.enc1_b)
    h = np.tanh(h @ w.enc2_w + w.enc2_b)
    h = np.tanh(h @ w.dec1_w + w.dec1_b)
    out: Array = h @ w.dec2_w + w.dec2_b
    return out


def residuals(w: Weights, f: Array) -> Array:
    """Residual z-scores of standardised features `f` [N, S*4]."""
    out: Array = (f - autoencode(w, np.clip(f, -AE_CLIP, AE_CLIP))) / w.resid_std
    return out


def forward(w: Weights, x: Array) -> ModelOutput:
    """Run the model in numpy (float32) on normalised windows [N, W, S]."""
    signals = x.shape[2]
    f = (raw_features(x) - w.feat_mean) / w.feat_std
    r = residuals(w, f)
    r2 = (r * r).reshape(-1, signals, N_FEATURES)
    magnitude = np.sqrt(r2.mean(axis=2))
    score = magnitude.max(axis=1)
    sign = np.where(r.reshape(-1, signals, N_FEATURES)[..., 0] >= 0, F32(1), F32(-1))
    contrib = sign * magnitude
    h = np.maximum(np.concatenate([f, r], axis=1) @ w.cls1_w + w.cls1_b, 0)
    probs = _softmax(h @ w.cls2_w + w.cls2_b)
    return ModelOutput(score.astype(F32), contrib.astype(F32), probs.astype(F32))
