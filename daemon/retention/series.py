"""One signal's place in retention: its raw ring, its unwritten readings, its compressor.

A series is created on first sight while `ring_bytes` has room for one more ring; after that
a signal's readings are dropped (and counted by `Retention`). Readings taken on the hot path
wait in `unwritten` (references to the caller's `Reading` tuples, strictly increasing in time)
until `Retention` writes its asset. The history bound of a series is absolute (`deviations`),
a percent of its span (`spans`), or a percent of the range seen so far, which only grows.

The table keeps only signals a model reads (`keep_signals`; all until told) and forgets the
series of an asset that sent nothing for `asset_idle_s` of wall time (`idle`, `drop`), so a
flood of names holds no ring for long. A reading more than `ring_seconds` ahead of its
series' newest is held until another confirms the jump (`confirms`): one reading cannot
move a series' clock and leave every later reading behind it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
from numpy.typing import NDArray

from edge_agent.core.readings import Quality, Reading
from edge_agent.daemon.retention.compression import Compressor
from edge_agent.daemon.retention.ring import BYTES_PER_SAMPLE, SignalRing
from edge_agent.daemon.retention.settings import RetentionSettings

F64 = NDArray[np.float64]
U8 = NDArray[np.uint8]
Arrays = tuple[F64, F64, U8]  # ts, values, quality
_BY_TS = itemgetter(2)
_GOOD = Quality.GOOD
_NO_SERIES: dict[str, Series] = {}  # an asset with none yet (never written to)


@dataclass(slots=True)
class Series:
    """The retention state of one asset's signal."""

    asset: str
    signal: str
    ring: SignalRing
    deviation: float | None  # absolute, from settings; None: percent of span
    span: float | None  # from settings; None: learned from the range seen
    lo: float = math.inf
    hi: float = -math.inf
    compressor: Compressor | None = None
    last: float = -math.inf  # newest timestamp taken, unwritten or written
    unwritten: list[Reading] = field(default_factory=list)  # taken, not yet written, in order
    held: tuple[float, float] | None = None  # (a jump's time, `last` when it came)

    def confirms(self, ts: float, jump: float) -> bool:
        """Whether a reading at `ts`, over `jump` after `last`, may be taken (else it is held).

        The first reading of a series is taken; a jump is taken when the reading before it
        was a jump to near the same time with no reading taken in between.
        """
        if self.last == -math.inf:
            return True
        held, self.held = self.held, (ts, self.last)
        return held is not None and held[1] == self.last and abs(ts - held[0]) <= jump

    def retake(self, mine: Sequence[Reading], n_late: int) -> int:
        """Take this batch's readings `mine` again, sorted (stable); return how many drop.

        The tail of `unwritten` that the batch appended goes, then `mine` is appended in time
        order, cut at the newest reading before the batch (which also drops NaN times).
        """
        taken = len(mine) - n_late
        if taken:
            del self.unwritten[-taken:]
        newest = self.unwritten[-1][2] if self.unwritten else self.ring.newest
        dropped = 0
        for r in sorted(mine, key=_BY_TS):
            if r[2] > newest:
                self.unwritten.append(r)
                newest = r[2]
            else:
                dropped += 1
        self.last = newest
        return dropped

    def take_unwritten(self) -> Arrays | None:
        """The unwritten readings as arrays, emptying the list; None when there are none."""
        unwritten = self.unwritten
        if not unwritten:
            return None
        self.unwritten = []
        n = len(unwritten)
        _, _, ts, values, quality = zip(*unwritten, strict=True)
        # fromiter and a count of GOOD: np.array over Python floats, and over the IntEnum
        # qualities above all, costs several times as much.
        all_good = quality.count(_GOOD) == n
        return (
            np.fromiter(ts, dtype=np.float64, count=n),
            np.fromiter(values, dtype=np.float64, count=n),
            np.zeros(n, dtype=np.uint8) if all_good else np.array(quality, dtype=np.uint8),
        )

    def clean(self, t: F64, v: F64, q: U8) -> tuple[Arrays, int]:
        """The samples strictly after the newest taken (in order), and how many were not."""
        keep = np.diff(t, prepend=self.last) > 0
        dropped = 0
        if not bool(keep.all()):
            dropped = int(t.size - keep.sum())
            t, v, q = t[keep], v[keep], q[keep]
        if t.size:
            self.last = float(t[-1])
        return (t, v, q), dropped

    def compress(
        self, t: F64, v: F64, q: U8, settings: RetentionSettings
    ) -> tuple[F64, F64, float] | None:
        """Feed GOOD samples to the compressor: the points it retains and their bound."""
        good = (q == 0) & np.isfinite(v)
        if not bool(good.all()):
            t, v = t[good], v[good]
        if t.size == 0:
            return None
        deviation = self.deviation
        if deviation is None:
            span = self.span
            if span is None:
                self.lo = min(self.lo, float(v.min()))
                self.hi = max(self.hi, float(v.max()))
                span = self.hi - self.lo
            deviation = settings.deviation_pct / 100 * span
        comp = self.compressor
        if comp is None:
            comp = self.compressor = Compressor(
                deviation, settings.max_interval_s, settings.exception_share
            )
        elif deviation > comp.deviation:
            comp.deviation = deviation
        kept_t, kept_v = comp.feed(t, v)
        return kept_t, kept_v, comp.deviation

    def flush(self) -> tuple[F64, F64, float] | None:
        """The points the compressor still holds back (at shutdown), and their bound."""
        if self.compressor is None:
            return None
        t, v = self.compressor.flush()
        return t, v, self.compressor.deviation


class SeriesTable:
    """Every series of one agent, by asset and signal, inside the `ring_bytes` budget."""

    def __init__(self, settings: RetentionSettings) -> None:
        self.settings = settings
        # +1: T seconds at R Hz, both ends included, is T * R + 1 samples.
        self._capacity = math.ceil(settings.ring_seconds * settings.ring_rate_hz) + 1
        self._max_series = settings.ring_bytes // (self._capacity * BYTES_PER_SAMPLE)
        self.by_key: dict[tuple[str, str], Series] = {}
        self._by_asset: dict[str, list[Series]] = {}
        self._signals_of: dict[str, dict[str, Series]] = {}  # the same series, by asset
        self._seen: dict[str, float] = {}  # asset -> monotonic time it last had readings
        self._signals: frozenset[str] | None = None  # None: every signal

    def __iter__(self) -> Iterator[Series]:
        return iter(self.by_key.values())

    @property
    def nbytes(self) -> int:
        """Bytes the rings hold now (each grows as its signal needs, up to its capacity)."""
        return sum(s.ring.nbytes for s in self.by_key.values())

    def for_signal(self, asset: str, signal: str) -> Series | None:
        """The series of one signal, made on first sight; None when no ring fits any more."""
        series = self.by_key.get((asset, signal))
        if series is not None or len(self.by_key) >= self._max_series or not self.uses(signal):
            return series
        s = self.settings
        deviation = s.deviations.get(f"{asset}/{signal}", s.deviations.get(signal))
        span = s.spans.get(f"{asset}/{signal}", s.spans.get(signal))
        series = Series(asset, signal, SignalRing(self._capacity, s.ring_seconds), deviation, span)
        self.by_key[(asset, signal)] = series
        self._by_asset.setdefault(asset, []).append(series)
        self._signals_of.setdefault(asset, {})[signal] = series
        return series

    def take(
        self, readings: Sequence[Reading], jump: float, flush_at: int
    ) -> tuple[list[str], list[tuple[str, str]], Counter[tuple[str, str]]]:
        """Append each reading to its series' unwritten list, in one pass (the hot path).

        Returns the assets with a series reaching `flush_at` unwritten readings, the series
        that got a reading not after their newest, and the readings refused by (asset,
        signal): no ring for them, or (signal "") a jump held back.
        """
        signals_of = self._signals_of
        full: list[str] = []
        late: list[tuple[str, str]] = []
        refused: Counter[tuple[str, str]] = Counter()
        # A message's readings come together: its asset's series are looked up once a run.
        asset_now: str | None = None
        mine: dict[str, Series] = {}
        for r in readings:
            asset, signal, ts, _, _ = r
            if asset is not asset_now:
                asset_now, mine = asset, signals_of.get(asset, _NO_SERIES)
            series = mine.get(signal)
            if series is None:
                series = self.for_signal(asset, signal)
                if series is None:
                    refused[asset, signal] += 1
                    continue
                mine = signals_of[asset]
            last = series.last
            if ts > last:
                if ts - last > jump and not series.confirms(ts, jump):
                    refused[asset, ""] += 1
                    continue
                series.last = ts
                unwritten = series.unwritten
                unwritten.append(r)
                if len(unwritten) == flush_at:
                    full.append(asset)
            else:
                late.append((asset, signal))
        return full, late, refused

    def keep_signals(self, signals: Iterable[str] | None) -> None:
        """Retain only these signals from now on (None: every signal)."""
        self._signals = None if signals is None else frozenset(signals)

    def uses(self, signal: str) -> bool:
        """Whether readings of `signal` are retained."""
        return self._signals is None or signal in self._signals

    def touch(self, asset: str, now: float) -> None:
        """The asset had readings at monotonic time `now`."""
        self._seen[asset] = now

    def idle(self, now: float, idle_s: float) -> list[str]:
        """Assets that had no readings for `idle_s`."""
        return [a for a, seen in self._seen.items() if now - seen > idle_s]

    def drop(self, asset: str) -> list[Series]:
        """Forget an asset's series (their rings freed); return them."""
        self._seen.pop(asset, None)
        gone = self._by_asset.pop(asset, [])
        self._signals_of.pop(asset, None)
        for series in gone:
            del self.by_key[(series.asset, series.signal)]
        return gone

    @property
    def assets(self) -> int:
        """Assets with at least one series."""
        return len(self._by_asset)

    def of(self, asset: str) -> Sequence[Series]:
        """The series of one asset, in the order they were made."""
        return self._by_asset.get(asset, ())

    def event_time(self, asset: str) -> float:
        """Newest reading time of the asset (taken, unwritten or written)."""
        return max((s.last for s in self.of(asset)), default=-math.inf)

    def assets_unwritten(self) -> list[str]:
        """Assets with a series holding unwritten readings."""
        return [a for a, group in self._by_asset.items() if any(s.unwritten for s in group)]
