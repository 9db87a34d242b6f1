"""Per-signal statistics of a batch of windows, against each asset's normal baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.core.readings import SignalStats


def window_stats(
    windows: np.ndarray, signals: Sequence[str], rate_hz: float, baselines: np.ndarray
) -> list[dict[str, SignalStats]]:
    """Return, per window, each signal's mean, RMS, min, max, slope and change vs baseline.

    `windows` is raw [N, W, S]; `baselines` is [N, S] (the asset's normal mean per signal).
    Vectorised over the batch: one pass of numpy, then one small dict per window.
    """
    n, w, _ = windows.shape
    x = windows.astype(np.float64, copy=False)
    mean = x.mean(axis=1)
    rms = np.sqrt((x * x).mean(axis=1))
    lo = x.min(axis=1)
    hi = x.max(axis=1)
    t = (np.arange(w, dtype=np.float64) - (w - 1) / 2.0) / rate_hz
    slope = np.einsum("t,nts->ns", t, x) / float(np.dot(t, t))
    base = baselines.astype(np.float64, copy=False)
    denom = np.where(np.abs(base) > 1e-9, np.abs(base), 1.0)
    change = np.where(np.isfinite(base), (mean - base) / denom * 100.0, 0.0)
    cols = (mean, rms, lo, hi, slope, base, change)
    per_window = np.stack(cols, axis=-1).tolist()  # [N][S][7] as Python floats in one call
    return [
        {name: SignalStats(*per_window[i][j]) for j, name in enumerate(signals)} for i in range(n)
    ]
