"""The page's view of the agent: fed by the pipeline, read only when a browser asks.

The pipeline hands every batch of scored windows to `scored` and every batch of outgoing
messages to `published`. Both are on the hot path and stay cheap: `scored` writes three
numbers per window into a fixed numpy ring per asset and keeps a reference to the window's
contributions; `published` decodes only recommendations (rare). Everything a page shows is
computed in `snapshot`, which runs only when a browser polls. Bounded: `POINTS` windows per
asset, `MAX_ASSETS` assets (the least recently scored goes first, counted and logged), the
last `RECENT` recommendations, and `MAX_INCIDENTS` incidents.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import msgspec
import numpy as np
import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, SignalStats, WindowResult
from edge_agent.daemon.web.journal import MAX_INCIDENTS, Incident, Journal, compact
from edge_agent.rules.recommendation import SCHEMA_ID

log = structlog.get_logger(__name__)

POINTS = 720  # an hour of windows at the shipped model's 5 s hop
MAX_ASSETS = 500  # 500 x 720 x 16 bytes = 5.8 MB at most
RECENT = 50
STALE_S = 60.0  # wall seconds without a scored window before an asset is not "normal"
REVIEW_QUIET = 6  # windows below threshold that close a needs-review episode on the page


class Observer(Protocol):
    """What the pipeline tells the page; both calls must be cheap and never raise."""

    def scored(self, results: Sequence[WindowResult]) -> None:
        """Windows just scored (before the rules see them)."""
        ...

    def published(self, messages: Sequence[Outgoing]) -> None:
        """Messages just put into the outbox."""
        ...


class _Track:
    """One asset: a ring of (ts, score, threshold) and its latest window."""

    __slots__ = ("contrib", "head", "n", "review", "score", "stats", "threshold", "ts", "wall")

    def __init__(self) -> None:
        self.ts = np.zeros(POINTS, np.float64)
        self.score = np.zeros(POINTS, np.float32)
        self.threshold = np.zeros(POINTS, np.float32)
        self.head = 0  # next slot
        self.n = 0
        self.wall = 0.0  # wall clock of the last scored window
        self.contrib: Mapping[str, float] = {}
        self.stats: Mapping[str, SignalStats] = {}
        self.review: tuple[str, int] | None = None  # open needs-review title, quiet windows

    def ordered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ring's points oldest first."""
        idx = (np.arange(self.n) + self.head - self.n) % POINTS
        return self.ts[idx], self.score[idx], self.threshold[idx]


Serving = Callable[[str], Mapping[str, object]]  # asset -> {"model": {...}, "rules": {...}}


class LiveState:
    """The in-memory state behind the page (implements `Observer`)."""

    def __init__(self, journal: Journal | None = None, window_s: float = 30.0) -> None:
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self._recent: deque[dict[str, object]] = deque(maxlen=RECENT)
        self._journal = journal
        self._limit = RateLimited(60.0)
        self.window_s = window_s
        self.incidents: OrderedDict[str, Incident] = OrderedDict()
        self._open: dict[tuple[str, str], str] = {}  # (asset, rule) -> incident id
        self._by_raise: dict[str, str] = {}  # raise id -> incident id
        if journal is not None:
            for inc in journal.load():
                self.incidents[inc.id] = inc
                if inc.status == "open":  # the advisor restores its rule state too
                    self._open[(inc.asset, inc.rule_id)] = inc.id
                    self._by_raise |= dict.fromkeys(inc.raise_ids(), inc.id)

    # --- fed by the pipeline (hot path) -------------------------------------------------

    def scored(self, results: Sequence[WindowResult]) -> None:
        """Write each window into its asset's ring."""
        now = time.time()
        tracks = self._tracks
        for r in results:
            t = tracks.get(r.asset)
            if t is None:
                t = self._new_track(r.asset)
            else:
                tracks.move_to_end(r.asset)  # least recently scored first
            i = t.head
            t.ts[i], t.score[i], t.threshold[i] = r.ts, r.score, r.threshold
            t.head = (i + 1) % POINTS
            t.n = min(t.n + 1, POINTS)
            t.wall, t.contrib, t.stats = now, r.contrib, r.stats
            if t.review is not None:
                quiet = 0 if r.score > r.threshold else t.review[1] + 1
                t.review = None if quiet >= REVIEW_QUIET else (t.review[0], quiet)

    def published(self, messages: Sequence[Outgoing]) -> None:
        """Take note of the recommendations among `messages`."""
        for m in messages:
            if m.priority < Priority.ESCALATION:
                continue  # digests, evidence and status: not for the page
            try:
                rec = msgspec.json.decode(m.payload)
            except msgspec.DecodeError:
                continue
            if isinstance(rec, dict) and rec.get("schema") == SCHEMA_ID:
                self._recommendation(rec)

    # --- incidents ------------------------------------------------------------------------

    def _new_track(self, asset: str) -> _Track:
        if len(self._tracks) >= MAX_ASSETS:
            dropped, _ = self._tracks.popitem(last=False)
            metrics.WEB_DROPPED.labels("asset").inc()
            if (held := self._limit.allow("asset")) is not None:
                log.warning(
                    "page: asset dropped, too many assets",
                    asset=dropped,
                    max_assets=MAX_ASSETS,
                    suppressed=held,
                )
        t = self._tracks[asset] = _Track()
        return t

    def _recommendation(self, rec: dict[str, object]) -> None:
        kind, asset = str(rec.get("kind")), str(rec.get("asset"))
        self._recent.append(compact(rec))
        if kind == "raise":
            self._raised(asset, rec)
        elif kind == "resolved":
            inc_id = self._by_raise.pop(str(rec.get("resolves")), None)
            inc = self.incidents.get(inc_id) if inc_id else None
            if inc is not None:
                inc.close(rec)
                self._open.pop((inc.asset, inc.rule_id), None)
                self._save(inc)
        elif kind == "needs_review":
            t = self._tracks.get(asset)
            if t is not None:
                t.review = (str(rec.get("title", "needs review")), 0)

    def _raised(self, asset: str, rec: dict[str, object]) -> None:
        key = (asset, str(rec.get("rule_id")))
        inc = self.incidents.get(self._open.get(key, ""))
        if inc is None:
            onset = self._onset(asset, _float(rec.get("window_ts")))
            inc = Incident.open(rec, onset, self._baselines(asset))
            self.incidents[inc.id] = inc
            self._open[key] = inc.id
            while len(self.incidents) > MAX_INCIDENTS:
                old, _ = self.incidents.popitem(last=False)
                self._open = {k: v for k, v in self._open.items() if v != old}
                self._by_raise = {k: v for k, v in self._by_raise.items() if v != old}
        else:
            inc.update(rec)
        self._by_raise[str(rec.get("id"))] = inc.id
        self._save(inc)

    def _onset(self, asset: str, ts: float) -> float:
        """Start of the run of anomalous windows that ends at `ts` (minus one window)."""
        t = self._tracks.get(asset)
        if t is None or t.n == 0:
            return ts - self.window_s
        tss, scores, thresholds = t.ordered()
        first = ts
        for i in range(len(tss) - 1, -1, -1):
            if tss[i] > ts:
                continue
            if scores[i] <= thresholds[i]:
                break
            first = float(tss[i])
        return first - self.window_s

    def _baselines(self, asset: str) -> dict[str, float]:
        t = self._tracks.get(asset)
        if t is None:
            return {}
        return {s: st.baseline for s, st in t.stats.items() if math.isfinite(st.baseline)}

    def _save(self, inc: Incident) -> None:
        if self._journal is not None:
            self._journal.write(inc)

    # --- read by the page -----------------------------------------------------------------

    def incident_of_evidence(self, evidence_id: str) -> Incident | None:
        """The incident whose raises froze this evidence record."""
        for inc in reversed(self.incidents.values()):
            if evidence_id in inc.evidence_ids:
                return inc
        return None

    def snapshot(
        self,
        serving: Serving,
        since: float = 0.0,
        last_reading_age_s: float | None = None,
        learning: Mapping[str, str] | None = None,
    ) -> dict[str, object]:
        """Everything the page shows; `since`: only ring points after this event time.

        `learning`: assets that learn (or failed to) and why, read from the learner now.
        """
        now = time.time()
        learning = learning or {}
        open_by_asset = {a: i for (a, _), i in self._open.items()}
        assets: list[dict[str, object]] = []
        for asset in sorted(set(self._tracks) | set(learning)):
            t = self._tracks.get(asset)
            if asset in learning:
                state, why = "learning", learning[asset]
            else:
                state, why = self._state(t, open_by_asset.get(asset), now, last_reading_age_s)
            row: dict[str, object] = {"asset": asset, "state": state, "why": why}
            row |= dict(serving(asset))
            row["incident"] = open_by_asset.get(asset)
            if t is not None and t.n:
                tss, scores, thresholds = t.ordered()
                keep = tss > since
                row |= {
                    "ts": _round(tss[keep], 3),
                    "score": _round(scores[keep], 5),
                    "threshold": _round(thresholds[keep], 5),
                    "last_score": round(float(scores[-1]), 5),
                    "last_threshold": round(float(thresholds[-1]), 5),
                    "last_ts": float(tss[-1]),
                    "contrib": {s: round(v, 4) for s, v in t.contrib.items() if math.isfinite(v)},
                }
            assets.append(row)
        return {
            "now": now,
            "assets": assets,
            "incidents": [i.summary() for i in reversed(self.incidents.values())][:RECENT],
            "recommendations": list(reversed(self._recent)),
        }

    def _state(
        self, t: _Track | None, incident: str | None, now: float, reading_age: float | None
    ) -> tuple[str, str]:
        if t is None or t.n == 0:
            return "not scored", "no window of this asset has been scored yet"
        inc = self.incidents.get(incident or "")
        if inc is not None:
            return "raised", inc.title
        idle = now - t.wall
        if idle > STALE_S:
            return _idle(idle, reading_age)
        if t.review is not None:
            return "needs review", t.review[0]
        score, threshold = float(t.score[t.head - 1]), float(t.threshold[t.head - 1])
        verdict = "above" if score > threshold else "below"
        tail = "; no rule holds" if score > threshold else ""
        return "normal", f"score {score:.3g} {verdict} threshold {threshold:.3g}{tail}"


def _idle(idle: float, reading_age: float | None) -> tuple[str, str]:
    """An asset with no window scored for `idle` seconds: stale, or not scored and why."""
    if reading_age is not None and reading_age < STALE_S:
        return "not scored", (
            f"readings arrive but no window was scored for {idle:.0f} s "
            "(bad or stale values, or skipped under load)"
        )
    return "stale", f"no reading for {idle:.0f} s"


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else time.time()


def _round(a: np.ndarray, digits: int) -> list[float]:
    return [round(float(x), digits) for x in a]
