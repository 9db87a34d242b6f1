"""The pipeline's own bounds and its lanes, on real models and rule packs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_agent.core import metrics
from edge_agent.core.readings import Reading
from edge_agent.daemon.app import build_pipeline
from edge_agent.daemon.flow import pipeline as pipeline_module
from edge_agent.daemon.flow.lanes import Lane, build_lane
from edge_agent.daemon.flow.pipeline import MAX_PENDING_REPLIES
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.settings import AgentSettings, Settings
from tests import learn_kit as kit


def test_evidence_replies_waiting_for_the_outbox_are_bounded(tmp_path: Path) -> None:
    settings = Settings(agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"))
    retention = Retention.from_settings(settings, "gw")
    pipeline = build_pipeline(settings, retention)
    dropped = metrics.EVIDENCE_REQUESTS_DROPPED._value.get()
    for i in range(MAX_PENDING_REPLIES + 44):
        pipeline.answer_evidence_request(b'{"id": "no-such-id", "request": "%d"}' % i)
    assert len(pipeline._replies) == MAX_PENDING_REPLIES
    assert metrics.EVIDENCE_REQUESTS_DROPPED._value.get() == dropped + 44
    # Every reply kept answers its request on the response topic (an error: unknown id).
    assert {r.topic for r in pipeline._replies} == {retention.response_topic}
    retention.close()


# --- lanes: a learned model's per-asset baseline ------------------------------------------


def _learned_lane(tmp_path: Path) -> Lane:
    manifest = kit.fitted(tmp_path / "model")
    settings = Settings(agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"))
    return build_lane("asset:sp-1", manifest, settings, gateway_id="gw")


def _feed(lane: Lane, values: np.ndarray, first: int, asset: str = "sp-1") -> None:
    for batch in kit.readings(asset, values, first):
        lane.frames.ingest([r._replace(signal="vib", value=r.value * 0.5) if r.signal == "vib_raw"
                            else r for r in batch])  # fmt: skip


def test_a_learned_baseline_follows_a_healthy_asset_and_freezes_during_an_episode(
    tmp_path: Path,
) -> None:
    lane = _learned_lane(tmp_path)
    assert lane.baselines is not None
    assert lane.episodes is not None
    start = lane.baselines.of("sp-1").copy()
    healthy = kit.rows(400, 41)
    healthy[:, 1] += 0.4  # the flow sits a little higher than in training: within normal
    _feed(lane, healthy, 0)
    assert lane.step() == []
    moved = lane.baselines.of("sp-1").copy()
    assert moved[1] > start[1] + 0.1  # it followed the asset
    assert lane.baselines.of("sp-2")[1] == start[1]  # per asset
    # A restricted suction: one recommendation, and the baseline does not learn the fault.
    fault = kit.rows(100, 42, flow_drop_from=0)
    _feed(lane, fault[:30], 400)
    assert [r.kind for r in lane.step()] == ["raise"]
    assert lane.episodes.is_open("sp-1")
    during = lane.baselines.of("sp-1").copy()
    _feed(lane, fault[30:], 430)
    assert lane.step() == []  # the same episode: nothing new to say
    # Back to normal: it takes 10 windows under 0.7 of the threshold to resolve, and during
    # those (healthy windows, the episode still open) the baseline stays where it was.
    after = kit.rows(40, 43)
    kinds: list[str] = []
    for k in range(len(after)):
        _feed(lane, after[k : k + 1], 500 + k)
        kinds += [r.kind for r in lane.step()]
        if lane.episodes.is_open("sp-1"):
            assert np.array_equal(lane.baselines.of("sp-1"), during)
    assert kinds == ["resolved"]
    assert not np.array_equal(lane.baselines.of("sp-1"), during)  # healthy again: it follows


def test_a_backlog_gives_the_verdicts_a_live_feed_gives(tmp_path: Path) -> None:
    """Windows of one asset are scored in order against the baseline the last one left."""
    values = np.vstack([kit.rows(300, 43), kit.rows(200, 44, flow_drop_from=50)])
    live, backlog = _learned_lane(tmp_path / "a"), _learned_lane(tmp_path / "b")
    got_live: list[tuple[str, float]] = []
    for k in range(len(values)):  # one row, one step
        _feed(live, values[k : k + 1], k)
        got_live += [(r.kind, float(str(r.payload["window_ts"]))) for r in live.step()]
    _feed(backlog, values, 0)  # everything at once: 486 windows in one step
    got_backlog = [(r.kind, float(str(r.payload["window_ts"]))) for r in backlog.step()]
    assert got_live
    assert got_backlog == got_live
    assert live.baselines is not None
    assert backlog.baselines is not None
    assert np.array_equal(live.baselines.of("sp-1"), backlog.baselines.of("sp-1"))


def test_a_bundle_for_the_same_grid_keeps_the_frames(tmp_path: Path) -> None:
    settings = Settings(agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"))
    pipeline = build_pipeline(settings)
    old = pipeline.shipped
    signals = old.manifest.signals
    for t in range(10):
        pipeline.ingest([Reading("pump-1", s, 1_750_000_000.0 + t, 1.0) for s in signals])
    new = build_lane("shipped", old.manifest, settings, gateway_id="gw")
    pipeline.replace(new)
    assert pipeline.shipped is new
    assert new.frames is old.frames
    assert new.gate is old.gate


# --- retention's bulk write, in slices -------------------------------------------------


def _noisy(assets: int, first: int, seconds: int) -> list[list[Reading]]:
    """One message's readings per asset and second, noisy enough for history to keep points."""
    rng = np.random.default_rng(first)
    return [
        [
            Reading(f"pump-{a}", s, 1_700_000_000.0 + t, float(rng.normal(10.0, 2.0)))
            for s in ("temperature", "vibration", "current")
        ]
        for t in range(first, first + seconds)
        for a in range(assets)
    ]


async def test_retention_is_written_in_slices_with_turns_of_the_loop_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the digests, retention's unwritten readings are written asset by asset, and
    the loop runs other work between slices: here readings of the same assets arrive in
    between. The digests hold what writing everything at once gives."""
    monkeypatch.setattr(pipeline_module, "FLUSH_SLICE_S", 0.0)  # a turn after every asset
    settings = Settings(agent=AgentSettings(state_dir=tmp_path / "a", gateway_id="gw"))
    retention = Retention.from_settings(settings, "gw")
    pipeline = build_pipeline(settings, retention)
    reference = Retention.from_settings(
        Settings(agent=AgentSettings(state_dir=tmp_path / "b", gateway_id="gw")), "gw"
    )
    early, late = _noisy(12, 0, 20), _noisy(12, 20, 3)
    for batch in early:
        pipeline.ingest(batch)
        reference.ingest(batch)
    turns: list[int] = []  # the interleaved work's count at each asset's write
    interleaved = 0
    flush = retention.flush

    def counted_flush(asset: str) -> None:
        turns.append(interleaved)
        flush(asset)

    monkeypatch.setattr(retention, "flush", counted_flush)

    async def meanwhile() -> None:
        nonlocal interleaved
        for batch in late:  # the same assets send more while their history is written
            interleaved += 1
            pipeline.ingest(batch)
            await asyncio.sleep(0)

    other = asyncio.create_task(meanwhile())
    await pipeline._move_retention(digests=True)
    await other
    for batch in late:
        reference.ingest(batch)
    assert len(set(turns)) > 1, "no other work ran while retention was written"
    with sqlite3.connect(tmp_path / "a" / "outbox.db") as db:
        queued = [bytes(p) for (p,) in db.execute("SELECT payload FROM msg ORDER BY seq")]
    assert len(queued) == 12  # one digest per asset
    got = _points(queued + [m.payload for m in retention.take_digests()])  # + what came later
    want = _points([m.payload for m in reference.take_digests()])
    assert len(want) == 12 * 3
    assert got == want
    await pipeline.outbox.close()
    retention.close()
    reference.close()


def _points(payloads: list[bytes]) -> dict[tuple[str, str], list[tuple[float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for payload in payloads:
        doc = json.loads(payload)
        for signal, points in doc["signals"].items():
            got = out.setdefault((doc["asset"], signal), [])
            got += zip(points["ts"], points["value"], strict=True)
    return {key: sorted(points) for key, points in out.items()}
