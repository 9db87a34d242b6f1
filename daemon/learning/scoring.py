"""Scoring alarms against labels: SKAB's protocol, over the rows of a file.

A row alarms when the window ending at its grid time is inside an open episode: from the
window a recommendation was raised at, up to (not including) the window it was resolved
at. Summed over files: F1 = TP / (TP + (FP + FN) / 2), FAR = 100 FP / (FP + TN),
MAR = 100 FN / (FN + TP); the delay of an anomaly is the time from its first row to its
first alarmed row (an anomaly with no alarm is missed and has no delay).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Episode = tuple[float, float]  # [raised at, resolved at) in event time; inf while open


@dataclass(frozen=True)
class Counts:
    """Confusion counts over scored rows."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn
        )

    @property
    def f1(self) -> float:
        """TP / (TP + (FP + FN) / 2); 0 with nothing to find and no alarm."""
        denom = self.tp + (self.fp + self.fn) / 2
        return self.tp / denom if denom else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, percent of normal rows."""
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate, percent of anomalous rows."""
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0


def episodes(payloads: Iterable[Mapping[str, object]]) -> list[Episode]:
    """[raised, resolved) spans from recommendation payloads in order (by window time).

    One span per raise of a rule until its resolution; a raise still open lasts forever.
    """
    open_at: dict[str, float] = {}
    out: list[Episode] = []
    for p in payloads:
        ts = float(str(p["window_ts"]))
        rule = str(p.get("rule_id"))
        if p.get("kind") == "raise" and rule not in open_at:
            open_at[rule] = ts
        elif p.get("kind") == "resolved" and rule in open_at:
            out.append((open_at.pop(rule), ts))
    out += [(start, math.inf) for start in open_at.values()]
    return out


def alarms(times: np.ndarray, episodes: Sequence[Episode]) -> np.ndarray:
    """Whether each row (by its grid time) lies in an episode: bool [N]."""
    out = np.zeros(len(times), dtype=bool)
    for start, end in episodes:
        out |= (times >= start) & (times < end)
    return out


def counts(alarm: np.ndarray, label: np.ndarray) -> Counts:
    """Confusion counts of alarms against 0/1 labels."""
    a, y = alarm.astype(bool), label.astype(bool)
    return Counts(
        int((a & y).sum()), int((a & ~y).sum()), int((~a & y).sum()), int((~a & ~y).sum())
    )


def delays(times: np.ndarray, alarm: np.ndarray, label: np.ndarray) -> list[float]:
    """Per anomaly (a run of label 1): seconds to its first alarm inside it; NaN if missed."""
    y = label.astype(bool)
    edges = np.diff(np.concatenate(([0], y.astype(np.int8), [0])))
    out: list[float] = []
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        hit = np.flatnonzero(alarm[start:stop])
        out.append(float(times[start + hit[0]] - times[start]) if hit.size else math.nan)
    return out


def median_delay(values: Sequence[float]) -> float | None:
    """The median of the delays of detected anomalies; None when none was detected."""
    found = [v for v in values if not math.isnan(v)]
    return float(np.median(found)) if found else None
