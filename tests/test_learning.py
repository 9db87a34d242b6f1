"""Learning on the gateway, in process: recording, the fit worker, states, relearn, restart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.assets import AssetSettings, Profile
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Outgoing, Reading
from edge_agent.daemon.app import build_pipeline
from edge_agent.daemon.flow.pipeline import Pipeline
from edge_agent.daemon.flow.settings import FrameSettings
from edge_agent.daemon.learning.learner import Learner
from edge_agent.daemon.learning.recorder import Recording
from edge_agent.daemon.learning.settings import LearningSettings
from edge_agent.daemon.learning.store import Store, asset_of, dir_name
from edge_agent.daemon.learning.wiring import build_learner
from edge_agent.daemon.settings import AgentSettings, Settings
from tests import learn_kit as kit

ASSET = "sp-1"


def _settings(tmp_path: Path, profile: Profile = kit.PROFILE, **learning: object) -> Settings:
    return Settings(
        agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"),
        assets=AssetSettings(profiles=[profile]),
        learning=LearningSettings.model_validate({"state_interval_s": 0.1, **learning}),
    )


class _Agent:
    """The pipeline and the learner as the app wires them, states collected as published."""

    def __init__(self, settings: Settings) -> None:
        self.pipeline: Pipeline = build_pipeline(settings)
        learner = build_learner(settings, self.pipeline, "edge-agent/gw", "gw")
        assert learner is not None
        self.learner: Learner = learner
        self.states: list[dict[str, object]] = []
        self.learner.publish = self._publish
        self.task: asyncio.Task[None] | None = None

    async def _publish(self, msgs: list[Outgoing]) -> None:
        for m in msgs:
            assert m.retain
            state = json.loads(m.payload)
            assert m.topic == f"edge-agent/gw/assets/{state['asset']}/state"
            if state["asset"] == ASSET:
                self.states.append(state)

    def start(self) -> None:
        self.task = asyncio.create_task(self.learner.run())

    def feed(self, batches: Sequence[Sequence[Reading]]) -> None:
        for batch in batches:
            self.pipeline.ingest(batch)

    async def until(self, state: str, timeout_s: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.learner.state_of(ASSET)
            if found is not None and found.state == state:
                await asyncio.sleep(0.3)  # its message goes out with the next flush
                return {"state": found.state, "reason": found.reason}
            await asyncio.sleep(0.05)
        raise AssertionError(f"no state {state}; states: {self.states}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.pipeline.outbox.close()


def test_a_recording_is_bounded_and_breaks_where_rows_are_missing() -> None:
    rec = Recording(kit.PROFILE, 50, FrameSettings(stale_after_s=3.0))
    batches = kit.readings(ASSET, kit.rows(80, 0))
    transformed = [[r._replace(signal="vib", value=r.value * 0.5) if r.signal == "vib_raw" else r
                    for r in b] for b in batches]  # fmt: skip
    for b in transformed[:20] + transformed[30:]:  # ten seconds with nothing: a new piece
        rec.ingest(b)
    assert rec.complete
    assert rec.count == 50
    assert rec.rows.shape == (50, 3)
    # Rows 0..19, the last held for 3 s (stale_after_s), then from row 30 a new piece.
    assert rec.breaks == [23]
    assert abs(rec.rows[:, 0].mean() - kit.LEVELS["vib"]) < 0.05


def test_asset_names_become_safe_folder_names(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for asset in ("pump/7", "..", ".hidden", "a b", "ü"):
        name = dir_name(asset)
        assert "/" not in name
        assert not name.startswith(".")
        assert asset_of(name) == asset
        assert store.model_dir(asset).parent == tmp_path / "models"


def test_a_period_longer_than_the_row_bound_is_refused(tmp_path: Path) -> None:
    profile = kit.PROFILE.model_copy(update={"learn_period_s": 90_000.0})
    with pytest.raises(ConfigError) as err:
        _Agent(_settings(tmp_path, profile, max_rows=86_400))
    assert "EDGE_ASSETS__PROFILES[0] (small-pump)" in str(err.value)
    assert "EDGE_LEARNING__MAX_ROWS=86400" in str(err.value)


async def test_an_asset_learns_then_scores_with_its_own_model_and_keeps_it(
    tmp_path: Path,
) -> None:
    agent = _Agent(_settings(tmp_path))
    agent.start()
    try:
        batches = kit.readings(ASSET, kit.rows(230, 3))  # 200 rows learn, 30 wait for the fit
        agent.feed(batches[:100])
        await asyncio.sleep(0.3)  # the state message of a half-recorded period goes out
        assert agent.states[-1]["stage"] == "recording"
        assert agent.states[-1]["progress"] == pytest.approx(99 / 200)
        agent.feed(batches[100:])
        await agent.until("scoring")
        lane = agent.pipeline.router.learned[ASSET]
        assert lane.manifest.kind == "learned"
        assert lane.manifest.signals == ["vib", "flow", "pressure"]
        assert Store(tmp_path).manifest(ASSET).is_file()
        stages = [(s["state"], s.get("stage")) for s in agent.states]
        assert stages[0] == ("learning", "recording")
        assert ("learning", "fitting") in stages
        assert stages[-1] == ("scoring", None)
        health = agent.learner.health()
        assert health["counts"] == {"learning": 0, "scoring": 1, "failed": 0}
        # The readings that came during the fit were scored by the new lane.
        assert await agent.pipeline.step() == 0
        # A restricted suction: flow down, vibration up.
        agent.feed(kit.readings(ASSET, kit.rows(60, 4, flow_drop_from=20), first=230))
        assert await agent.pipeline.step() >= 1
        assert lane.episodes is not None
        assert lane.episodes.is_open(ASSET)
    finally:
        await agent.stop()
    # A restart loads the learned model: the asset scores at once, no learning.
    again = _Agent(_settings(tmp_path))
    try:
        assert ASSET in again.pipeline.router.learned
        state = again.learner.state_of(ASSET)
        assert state is not None
        assert state.state == "scoring"
    finally:
        await again.stop()


async def test_relearn_forgets_the_model_and_records_again(tmp_path: Path) -> None:
    agent = _Agent(_settings(tmp_path))
    agent.start()
    try:
        agent.feed(kit.readings(ASSET, kit.rows(210, 5)))
        await agent.until("scoring")
        assert agent.learner.relearn(ASSET)
        assert ASSET not in agent.pipeline.router.learned
        state = await agent.until("learning")
        assert state["state"] == "learning"
        await asyncio.sleep(0.3)
        assert not Store(tmp_path).manifest(ASSET).exists()  # a restart would learn again too
        assert not agent.learner.relearn("fan-1")  # no learn profile: nothing to do
        agent.feed(kit.readings(ASSET, kit.rows(210, 6), first=300))
        await agent.until("scoring")
    finally:
        await agent.stop()


async def test_a_fit_the_worker_refuses_leaves_the_asset_failed_with_the_reason(
    tmp_path: Path,
) -> None:
    agent = _Agent(_settings(tmp_path))
    agent.start()
    try:
        values = kit.rows(210, 7)
        values[:, 2] = 4.0  # a pressure transmitter stuck at one value
        agent.feed(kit.readings(ASSET, values))
        state = await agent.until("failed")
        assert "constant" in str(state["reason"])
        assert "'pressure'" in str(state["reason"])
        assert agent.states[-1]["state"] == "failed"
        assert agent.states[-1]["reason"] == state["reason"]
        assert ASSET not in agent.pipeline.router.learned
        # Its readings are dropped (counted) until a relearn; nothing crashes.
        agent.feed(kit.readings(ASSET, kit.rows(10, 8), first=300))
        assert await agent.pipeline.step() == 0
    finally:
        await agent.stop()


async def test_fits_wait_for_a_slot(tmp_path: Path) -> None:
    profile = kit.PROFILE.model_copy(update={"match": ["sp-*"]})
    agent = _Agent(_settings(tmp_path, profile, max_fits=1))
    agent.start()
    try:
        for i in range(3):
            agent.feed(kit.readings(f"sp-{i + 10}", kit.rows(201, 10 + i)))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = agent.learner.health()["counts"]
            assert isinstance(counts, dict)
            if counts["scoring"] == 3:
                break
            fitting = [
                a
                for a in ("sp-10", "sp-11", "sp-12")
                if (s := agent.learner.state_of(a)) is not None and s.stage == "fitting"
            ]
            assert len(fitting) <= 1
            await asyncio.sleep(0.02)
        assert agent.learner.health()["counts"] == {"learning": 0, "scoring": 3, "failed": 0}
    finally:
        await agent.stop()


def test_learning_rows_are_the_grid_rows_the_model_will_score() -> None:
    """The recording holds what the frames hold: the profile's transform applied."""
    rec = Recording(kit.PROFILE, 40, FrameSettings())
    values = kit.rows(41, 9)
    for batch in kit.readings(ASSET, values):
        rec.ingest([r._replace(signal="vib", value=r.value * 0.5) if r.signal == "vib_raw"
                    else r for r in batch])  # fmt: skip
    assert np.allclose(rec.rows, values[:40].astype(np.float32))
