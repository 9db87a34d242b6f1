"""The pipeline's own bounds and its lanes, on real models and rule packs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.core import metrics
from edge_agent.core.readings import Reading
from edge_agent.daemon.app import build_pipeline
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
