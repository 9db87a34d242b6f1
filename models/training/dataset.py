"""Windows cut from simulator traces, with the labels training and evaluation need."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge_agent.simulator.plant import FAULTS, Trace

# The classes the model is trained on: normal, every fault the simulator injects, and
# "unknown" for anomalies none of them explains. The manifest, not this tuple, is what the
# runtime reads.
CLASSES: tuple[str, ...] = ("normal", *FAULTS, "unknown")

# A fault counts as visible in a window once some sample moved this far from the plant's
# fault-free reading, in units of the signal's normalisation std ...
VISIBLE_Z = 0.3
# ... or, for a stuck sensor (whose frozen value may sit close to the truth), once this many
# samples of the window are frozen.
VISIBLE_STUCK = 8


class Windows(NamedTuple):
    """Windows of one trace: raw values, end times and labels."""

    x: np.ndarray  # float32 [N, W, S] raw (not normalised)
    end: np.ndarray  # int [N] index of each window's last sample in the trace
    label: np.ndarray  # int [N] the trace's label at the window's last sample
    visible: np.ndarray  # bool [N] the fault's effect shows in the window


def cut(values: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (windows [N, W, S] float32, end index [N]) of a (T, S) series."""
    if values.shape[0] < window:
        return np.empty((0, window, values.shape[1]), np.float32), np.empty(0, np.int64)
    view = sliding_window_view(values, window, axis=0)[::hop]  # [N, S, W]
    x = np.ascontiguousarray(np.transpose(view, (0, 2, 1)), dtype=np.float32)
    end = np.arange(x.shape[0], dtype=np.int64) * hop + window - 1
    return x, end


def trace_windows(trace: Trace, window: int, hop: int, norm_std: np.ndarray) -> Windows:
    """Cut `trace` into windows and mark where its fault's effect is visible."""
    x, end = cut(trace.values, window, hop)
    label = trace.label[end]
    if trace.fault is None:
        return Windows(x, end, label, np.zeros(end.shape, bool))
    effect = np.abs(trace.values - trace.normal) / norm_std
    eff_w, _ = cut(effect, window, hop)
    active_w, _ = cut((trace.label > 0).astype(np.float64)[:, None], window, hop)
    active = active_w[..., 0].sum(axis=1)
    if trace.fault.kind == "stuck_sensor":
        visible = active >= VISIBLE_STUCK
    else:
        visible = (eff_w.max(axis=(1, 2)) >= VISIBLE_Z) & (active > 0)
    return Windows(x, end, label, visible & (label > 0))
