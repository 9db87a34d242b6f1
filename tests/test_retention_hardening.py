"""Retention under hostile input (issue 13): idle assets forgotten, one bad timestamp held back,
signals no model reads never retained."""

from __future__ import annotations

import time
from pathlib import Path

from edge_agent.core.metrics import REGISTRY
from edge_agent.core.readings import Reading
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings

T0 = 1_750_000_000.0


def _settings(**kw: float) -> RetentionSettings:
    return RetentionSettings(
        ring_seconds=120.0, ring_rate_hz=1.0, evidence_pre_s=30, evidence_post_s=30, **kw
    )


def _sample(asset: str, ts: float, signals: tuple[str, ...] = ("temperature",)) -> list[Reading]:
    return [Reading(asset, s, ts, 60.0 + (ts % 7)) for s in signals]


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_idle_assets_are_forgotten_their_history_kept(tmp_path: Path) -> None:
    ret = Retention(_settings(asset_idle_s=0.2), tmp_path)
    before = _metric("edge_assets_evicted_total", {"part": "retention", "reason": "idle"})
    for t in range(30):
        ret.ingest(_sample("typo-1", T0 + t) + _sample("typo-2", T0 + t))
    ret.take_digests()
    assert ret.usage.ring > 0
    time.sleep(0.3)
    for t in range(30):
        ret.ingest(_sample("real", T0 + t))
    digests = ret.take_digests()
    after = _metric("edge_assets_evicted_total", {"part": "retention", "reason": "idle"})
    assert after - before == 2
    assert _metric("edge_assets_tracked", {"part": "retention"}) == 1
    assert {d.key for d in digests} >= {"digest/typo-1", "digest/typo-2"}  # last points kept
    ring_of_one = ret.usage.ring
    for t in range(30, 60):  # the typos come back: new rings, nothing stale
        ret.ingest(_sample("typo-1", T0 + t))
    assert ret.usage.ring == 2 * ring_of_one


def test_one_reading_far_ahead_cannot_blind_a_series(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path)
    before = _metric("edge_readings_dropped_total", {"reason": "implausible_ts"})
    for t in range(20):
        ret.ingest(_sample("p1", T0 + t))
    ret.ingest([Reading("p1", "temperature", 1e30, 1.0)])
    for t in range(20, 40):
        ret.ingest(_sample("p1", T0 + t))
    ret.take_digests()
    after = _metric("edge_readings_dropped_total", {"reason": "implausible_ts"})
    assert after - before == 1
    series = ret._series.by_key["p1", "temperature"]
    assert series.last == T0 + 39
    assert series.ring.newest == T0 + 39


def test_a_jump_confirmed_by_the_next_reading_is_taken(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path)
    for t in range(5):
        ret.ingest(_sample("p1", T0 + t))
    for t in range(5):  # back after an hour
        ret.ingest(_sample("p1", T0 + 3600 + t))
    series = ret._series.by_key["p1", "temperature"]
    assert series.last == T0 + 3604


def test_signals_no_model_reads_are_not_retained_nor_sent(tmp_path: Path) -> None:
    ret = Retention(_settings(), tmp_path)
    ret.keep_signals(["temperature"])
    before = _metric("edge_readings_dropped_total", {"reason": "retention_no_ring"})
    for t in range(200):
        ret.ingest(_sample("p1", T0 + t, ("temperature", "rpm")))
    digests = ret.take_digests()
    assert digests
    assert all(b"rpm" not in d.payload for d in digests)
    assert b"temperature" in digests[0].payload
    assert _metric("edge_readings_dropped_total", {"reason": "retention_no_ring"}) == before
