"""The gate: a cheap statistical stage that decides which windows need the model.

Per asset and signal it keeps an EWMA baseline (mean and variance of window means) learnt
from windows judged normal. A window whose mean strays more than `z_limit` standard
deviations from the baseline always goes to the model; so does every window while the
backlog is small. Under load (backlog above `backlog_high`, or pressure raised by the
daemon) normal-looking windows are skipped, except one in `sample_every`, so the model
still sees a periodic sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_agent.core import metrics
from edge_agent.daemon.flow.frames import Window
from edge_agent.daemon.flow.settings import GateSettings


class _Baseline:
    __slots__ = ("mean", "seen", "skipped", "var")

    def __init__(self, n_signals: int) -> None:
        self.mean = np.full(n_signals, np.nan)
        self.var = np.zeros(n_signals)
        self.seen = 0
        self.skipped = 0


class Gate:
    """Chooses windows for the model and keeps each asset's normal baseline."""

    def __init__(self, settings: GateSettings, n_signals: int) -> None:
        self.settings = settings
        self._n = n_signals
        self._assets: dict[str, _Baseline] = {}
        self.pressure = False  # set by the daemon when the event loop or backlog is overloaded

    def baselines(self, windows: Sequence[Window]) -> np.ndarray:
        """Return the normal mean per signal of each window's asset, [N, S] (NaN while unknown)."""
        return np.stack([self._baseline(w.asset).mean for w in windows])

    def select(self, windows: Sequence[Window], backlog: int) -> list[Window]:
        """Return the windows that need the model; count the others as skipped."""
        s = self.settings
        under_load = self.pressure or (s.mode == "adaptive" and backlog > s.backlog_high)
        if not under_load or not windows:
            return list(windows)
        chosen: list[Window] = []
        for w in windows:
            base = self._baseline(w.asset)
            if base.seen == 0:
                chosen.append(w)
                continue
            z = np.abs(w.values.mean(axis=0) - base.mean) / np.sqrt(base.var + 1e-12)
            base.skipped += 1
            if float(z.max()) > s.z_limit or base.skipped >= s.sample_every:
                base.skipped = 0
                chosen.append(w)
        skipped = len(windows) - len(chosen)
        if skipped:
            metrics.WINDOWS.labels("skipped").inc(skipped)
        return chosen

    def learn(self, windows: Sequence[Window], normal: Sequence[bool]) -> None:
        """Fold the means of the windows judged normal into their assets' baselines."""
        alpha = self.settings.ewma_alpha
        for w, ok in zip(windows, normal, strict=True):
            if not ok:
                continue
            base = self._baseline(w.asset)
            m = w.values.mean(axis=0, dtype=np.float64)
            if base.seen == 0:
                base.mean = m
            else:
                delta = m - base.mean
                base.mean = base.mean + alpha * delta
                base.var = (1 - alpha) * (base.var + alpha * delta * delta)
            base.seen += 1

    def _baseline(self, asset: str) -> _Baseline:
        base = self._assets.get(asset)
        if base is None:
            base = self._assets[asset] = _Baseline(self._n)
        return base
