"""100 assets x 8 signals at 10 Hz for a simulated day: budgets hold, evictions by priority (4).

The feed is vectorised (one `ingest_frame` per asset per hour) so the day takes seconds:
steady levels with noise inside the deadband, an hourly level step per asset, and evidence
triggers every hour, enough to push both classes past their budgets.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from edge_agent.core.metrics import REGISTRY
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings

ASSETS = [f"pump-{i:03d}" for i in range(100)]
SIGNALS = [f"s{j}" for j in range(8)]
RATE = 10.0
DAY = 86_400
CHUNK = 3600  # seconds per ingest call
RING_SAMPLES = 60 * 10 + 1  # 60 s at 10 Hz, both ends
START = 1.7e9


SETTINGS = RetentionSettings(
    ring_seconds=60,
    ring_rate_hz=RATE,
    ring_bytes=len(ASSETS) * len(SIGNALS) * RING_SAMPLES * 17,
    evidence_pre_s=20,
    evidence_post_s=20,
    store_bytes=2 * 2**20,
    history_bytes=2**20,
    spans=dict.fromkeys(SIGNALS, 100.0),  # deviation 1.0
    max_interval_s=600,
)


def _evicted(cls: str, reason: str) -> float:
    labels = {"class": cls, "reason": reason}
    return REGISTRY.get_sample_value("edge_retention_evictions_total", labels) or 0.0


class Watch:
    """Checks the priority rule at every eviction, and the budgets after every call."""

    def __init__(self, tmp_path: Path) -> None:
        ticks = itertools.count()
        # Strictly increasing, so that "oldest" is well defined; far from any TTL.
        self.ret = Retention(
            SETTINGS,
            tmp_path,
            clock=lambda: 5.0e6 + next(ticks) * 1e-3,
            on_evict=self.on_evict,
        )
        self.evicted: list[tuple[str, str]] = []
        self.stored: list[str] = []  # evidence ids in the order they reached the disk
        self.peak = {"ring": 0, "history": 0, "store": 0}

    def on_evict(self, cls: str, key: str, reason: str, created: float) -> None:
        assert reason == "budget"
        ret = self.ret
        if cls == "evidence":
            # Evidence outranks history: it goes only when no history is left to take.
            assert len(ret.history) == 0
            oldest = ret.evidence.oldest()
            assert oldest is None or created <= oldest[1]
        else:
            # Oldest first: nothing left in the class was stored before this one.
            front = next(iter(ret.history), None)
            assert front is None or created <= front.created
        self.evicted.append((cls, key))

    def after_call(self) -> None:
        ids = self.ret.evidence.ids()
        self.stored += [i for i in ids[-3:] if i not in self.stored[-6:]]
        use = self.ret.usage
        assert use.ring <= SETTINGS.ring_bytes
        assert use.history <= SETTINGS.history_bytes
        assert use.history + use.evidence <= SETTINGS.store_bytes
        for name, value in (("ring", use.ring), ("history", use.history)):
            self.peak[name] = max(self.peak[name], value)
        self.peak["store"] = max(self.peak["store"], use.history + use.evidence)


def test_a_day_of_a_hundred_pumps_stays_in_budget(tmp_path: Path) -> None:
    before = {cls: _evicted(cls, "budget") for cls in ("evidence", "history")}
    watch = Watch(tmp_path)
    ret = watch.ret
    rng = np.random.default_rng(42)
    steps = int(CHUNK * RATE)
    noise = rng.uniform(-0.02, 0.02, (steps, len(SIGNALS)))  # inside the ±0.05 deadband
    levels = rng.uniform(10, 90, (len(ASSETS), len(SIGNALS)))
    offsets = np.arange(steps) / RATE
    triggered: list[str] = []
    for c in range(DAY // CHUNK):
        t0 = START + c * CHUNK
        levels += rng.choice([-5.0, 5.0], levels.shape)  # an hourly step everywhere
        for k in range(3):  # three incidents an hour, on rotating assets
            asset = ASSETS[(7 * c + 31 * k) % len(ASSETS)]
            triggered.append(ret.trigger(asset, t0 + 300 + 1000 * k, f"incident {c}.{k}"))
        for a, asset in enumerate(ASSETS):
            ret.ingest_frame(asset, SIGNALS, t0 + offsets, levels[a] + noise)
            watch.after_call()
    # The accounting is the disk's truth (once the writer thread is done).
    assert ret.evidence.flush(30)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "evidence").iterdir())
    assert on_disk == ret.usage.evidence
    print(f"\npeak bytes by accounting: {watch.peak}")
    assert watch.peak["store"] > SETTINGS.store_bytes * 0.9  # the budget was really in play

    # Both classes were squeezed, and every eviction was counted.
    gone_ev = [key for cls, key in watch.evicted if cls == "evidence"]
    gone_hist = [key for cls, key in watch.evicted if cls == "history"]
    assert gone_ev
    assert gone_hist
    assert _evicted("evidence", "budget") - before["evidence"] == len(gone_ev)
    assert _evicted("history", "budget") - before["history"] > len(gone_hist)  # counts points
    # Oldest first within a class (also checked at each eviction, above).
    assert sorted(watch.stored) == sorted(triggered)
    assert gone_ev == watch.stored[: len(gone_ev)]
    assert ret.evidence.ids() == watch.stored[len(gone_ev) :]
