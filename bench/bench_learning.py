"""Learning on the gateway: the event loop while fits run, and a learned lane's cost per window.

- lag: ten assets of a `learn` profile (8 signals, a 400 s period) complete their periods at
  once and are fitted together (EDGE_LEARNING__MAX_FITS=10), each in its worker process,
  while twenty other assets' readings flow into the pipeline (shipped model, 2,000 readings
  a second). A sampler measures how late a 10 ms sleep of the event loop wakes: before the
  fits (reference: what the machine's other load alone costs) and while they run.
- cost: a pipeline lane's step (scorer, window statistics, rule pack) per window, the
  learned model (per-asset baseline, learned pack) against the shipped model: one window per
  step (a live asset) and 64 assets' windows per step (a profile's fitted model serves many).
Run alone: `python -m bench learning`.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.core.assets import AssetSettings, Profile
from edge_agent.core.readings import Outgoing, Reading
from edge_agent.daemon.app import build_pipeline, build_shipped_lane
from edge_agent.daemon.flow.lanes import Lane, build_lane
from edge_agent.daemon.learning.settings import LearningSettings
from edge_agent.daemon.learning.wiring import build_learner
from edge_agent.daemon.settings import AgentSettings, Settings
from edge_agent.models.learn.fit import FitOptions
from edge_agent.models.learn.job import Output, fit_rows
from edge_agent.simulator.plant import SIGNALS, simulate

LEARNERS = 10
REFERENCE_S = 10.0  # lag sampled this long before the fits: the machine's own noise
FLOWING = 20
RATE = 2000  # readings per second of the flowing assets
START = 1_750_000_000.0
NAMES = ["vib1", "vib2", "current", "pressure", "temp_motor", "temp_fluid", "voltage", "flow"]
ROLES = ["vibration", "vibration", "current", "pressure", "temperature", "temperature"]
ROLES += ["voltage", "flow"]
LEVEL = np.array([0.2, 0.27, 2.0, 0.3, 80.0, 26.0, 230.0, 120.0])
NOISE = np.array([0.004, 0.005, 0.15, 0.05, 0.3, 0.05, 3.0, 1.5])
PROFILE = Profile.model_validate(
    {
        "name": "bench",
        "match": ["learn-*"],
        "learn_period_s": 400,
        "signals": [{"name": n, "role": r} for n, r in zip(NAMES, ROLES, strict=True)],
    }
)


def _rows(n: int, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, (n, 8))
    out: np.ndarray = LEVEL + noise * NOISE
    return out


async def _nothing(_msgs: list[Outgoing]) -> None:
    return None


class _Lag:
    """How late a 10 ms sleep wakes, sampled until stopped."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            self.samples.append(time.perf_counter() - start - 0.01)

    def take(self) -> np.ndarray:
        out, self.samples = np.array(self.samples) * 1e3, []
        return out


def _say_lag(label: str, ms: np.ndarray) -> None:
    print(
        f"  {label:<30} event-loop lag median {np.median(ms):6.2f} ms  p99 "
        f"{np.percentile(ms, 99):6.2f} ms  max {ms.max():7.2f} ms  ({ms.size} samples)"
    )


async def _lag(state: Path) -> None:
    settings = Settings(
        agent=AgentSettings(state_dir=state, gateway_id="bench"),
        assets=AssetSettings(profiles=[PROFILE]),
        learning=LearningSettings(max_fits=LEARNERS, state_interval_s=1.0),
    )
    pipeline = build_pipeline(settings)
    learner = build_learner(settings, pipeline, "bench", "bench")
    assert learner is not None
    learner.publish = _nothing
    flowing = [simulate(f"pump-{i}", 500 + i, 3600.0, start_ts=START) for i in range(FLOWING)]
    lag = _Lag()

    async def flow() -> None:
        per_tick = FLOWING * len(SIGNALS)
        ticks = RATE / per_tick
        for t in range(3600):
            for trace in flowing:
                row = trace.values[t].tolist()
                pipeline.ingest(
                    [
                        Reading(trace.asset, s, START + t, v)
                        for s, v in zip(SIGNALS, row, strict=True)
                    ]
                )
            await asyncio.sleep(1.0 / ticks)

    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(pipeline.run()),
            tg.create_task(learner.run()),
            tg.create_task(flow()),
            tg.create_task(lag.run()),
        ]
        await asyncio.sleep(REFERENCE_S)
        _say_lag("readings flowing, no fit", lag.take())
        started = time.monotonic()
        rows = [_rows(401, a).tolist() for a in range(LEARNERS)]
        for k in range(401):  # a batch per asset and turn of the loop, as a connector's come
            for a in range(LEARNERS):
                pipeline.ingest(
                    [
                        Reading(f"learn-{a}", n, START + k, v)
                        for n, v in zip(NAMES, rows[a][k], strict=True)
                    ]
                )
            await asyncio.sleep(0)
        while True:
            counts = learner.health()["counts"]
            assert isinstance(counts, dict)
            if counts["scoring"] + counts["failed"] == LEARNERS:
                break
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        _say_lag(f"{LEARNERS} fits at once", lag.take())
        print(
            f"  {LEARNERS} assets recorded, fitted (a worker each) and scoring in {took:.1f} s; "
            f"failed: {counts['failed']}"
        )
        for task in tasks:
            task.cancel()
    await pipeline.outbox.close()


def _step_cost(lane: Lane, rows: np.ndarray, names: list[str], assets: int) -> float:
    """Microseconds per window of `lane.step()` with `assets` assets' windows pending."""
    windows = 0
    spent = 0
    for k in range(rows.shape[0]):
        lane.frames.ingest(
            [
                Reading(f"a{i}", n, START + k, v)
                for i in range(assets)
                for n, v in zip(names, rows[k].tolist(), strict=True)
            ]
        )
        pending = lane.pending
        if not pending:
            continue
        start = time.perf_counter_ns()
        lane.step()
        if k > 3 * lane.manifest.window:  # past the first windows (warm-up)
            spent += time.perf_counter_ns() - start
            windows += pending
    return spent / windows / 1e3


def _cost(work: Path) -> None:
    settings = Settings(agent=AgentSettings(state_dir=work, gateway_id="bench"))
    fitted = fit_rows(
        _rows(400, 99), NAMES, ROLES, work / "model", FitOptions(), output=Output(tflite="off")
    ).manifest
    normal = simulate("pump-x", 7, 2000.0, start_ts=START).values
    for assets, rows in ((1, 1500), (64, 300)):
        learned = build_lane("learned", fitted, settings, gateway_id="bench")
        shipped = build_shipped_lane(settings)
        per_learned = _step_cost(learned, _rows(rows, 1), NAMES, assets)
        per_shipped = _step_cost(shipped, normal[: rows * 5], list(SIGNALS), assets)
        print(
            f"  lane step, {assets:>2} window(s) per step: learned {per_learned:7.1f} us/window, "
            f"shipped {per_shipped:7.1f} us/window, ratio {per_learned / per_shipped:.2f}"
        )


def main() -> None:
    """Print the lag figures and the cost per window."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-learning-") as tmp:
        asyncio.run(_lag(Path(tmp) / "state"))
        _cost(Path(tmp))


if __name__ == "__main__":
    main()
