"""Asset profiles: configuration, matching, the transform at ingest (in process, over MQTT)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from edge_agent.core.assets import AssetSettings, Profile, SignalSpec
from edge_agent.core.errors import ConfigError
from edge_agent.core.readings import Reading
from edge_agent.daemon.app import build_pipeline
from edge_agent.daemon.flow.lanes import profile_lanes
from edge_agent.daemon.flow.routing import MAX_ROUTES, Router
from edge_agent.daemon.settings import AgentSettings, Settings, load_settings
from edge_agent.models.manifest import load_manifest
from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0
# The simulator's pump as a site might publish it: Fahrenheit and kPa under its own names.
FIELD_PROFILE = {
    "name": "us-pump",
    "match": ["pump-*"],
    "model": "shipped",
    "signals": [
        {"name": "temperature", "source": "temp_f", "unit": "degC", "scale": 5 / 9,
         "offset": -32 * 5 / 9, "role": "temperature"},
        {"name": "pressure", "source": "p_kpa", "unit": "bar", "scale": 0.01, "role": "pressure"},
        {"name": "vibration", "role": "vibration", "unit": "mm/s"},
        {"name": "current", "role": "current", "unit": "A"},
        {"name": "flow", "role": "flow", "unit": "m3/h"},
    ],
}  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGE_"):
            monkeypatch.delenv(name)


def _signals(n: int) -> list[dict[str, object]]:
    return [{"name": f"s{i}", "role": "other"} for i in range(n)]


def test_profiles_come_from_one_json_variable_and_the_first_match_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    profiles = [
        {"name": "north", "match": ["pump-n*"], "signals": _signals(2), "learn_period_s": 600},
        {"name": "pumps", "match": ["pump-*", "p?"], "signals": _signals(1), "model": "shipped"},
    ]
    monkeypatch.setenv("EDGE_ASSETS__PROFILES", json.dumps(profiles))
    assets = load_settings().assets
    assert [p.name for p in assets.profiles] == ["north", "pumps"]
    north = assets.profile_of("pump-n7")
    assert north is not None
    assert north.name == "north"
    assert north.learns  # `learn` is the default model
    assert north.learn_period_s == 600
    assert north.signals[0].source_name == "s0"  # no source: the name itself
    pumps = assets.profile_of("p1")
    assert pumps is not None
    assert pumps.name == "pumps"
    assert not pumps.learns
    assert assets.profile_of("fan-1") is None


@pytest.mark.parametrize(
    ("profile", "says"),
    [
        ({"name": "x", "match": ["*"], "signals": _signals(17)}, "at most 16"),
        ({"name": "x", "match": ["*"], "signals": []}, "at least 1"),
        ({"name": "x", "match": ["*"], "signals": [{"name": "a", "role": "rpm"}]}, "'vibration'"),
        (
            {"name": "x", "match": ["*"], "signals": [{"name": "a"}, {"name": "b", "source": "a"}]},
            "signal source 'a' given twice",
        ),
        ({"name": "x", "match": [], "signals": _signals(1)}, "at least 1"),
    ],
    ids=["17-signals", "no-signal", "unknown-role", "source-twice", "no-pattern"],
)
def test_a_bad_profile_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, profile: dict[str, object], says: str
) -> None:
    monkeypatch.setenv("EDGE_ASSETS__PROFILES", json.dumps([profile]))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "EDGE_ASSETS__PROFILES" in str(err.value)
    assert says in str(err.value)


def test_without_profiles_every_reading_reaches_the_shipped_lane_unchanged(
    tmp_path: Path,
) -> None:
    pipeline = build_pipeline(Settings(agent=AgentSettings(state_dir=tmp_path, gateway_id="gw")))
    assert not pipeline.router.profiled
    assert pipeline.router.lanes() == [pipeline.shipped]
    signals = pipeline.scorer.manifest.signals
    for t in range(40):
        pipeline.ingest([Reading("pump-1", s, START + t, 1.0) for s in signals])
    assert pipeline.shipped.pending > 0  # windows of the shipped model's grid


def test_the_transform_renames_scales_and_offsets_and_passes_unknown_signals(
    tmp_path: Path,
) -> None:
    settings = Settings(
        agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"),
        assets=AssetSettings(profiles=[Profile.model_validate(FIELD_PROFILE)]),
    )
    pipeline = build_pipeline(settings)
    router = pipeline.router
    assert router.profiled
    out, lanes = router.dispatch(
        [
            Reading("pump-1", "temp_f", START, 212.0),
            Reading("pump-1", "p_kpa", START, 250.0),
            Reading("pump-1", "flow", START, 80.0),
            Reading("pump-1", "colour", START, 3.0),
            Reading("fan-1", "p_kpa", START, 250.0),  # no profile: as it arrived
        ]
    )
    got = {(r.asset, r.signal): round(r.value, 6) for r in out}
    assert got == {
        ("pump-1", "temperature"): 100.0,
        ("pump-1", "pressure"): 2.5,
        ("pump-1", "flow"): 80.0,
        ("pump-1", "colour"): 3.0,
        ("fan-1", "p_kpa"): 250.0,
    }
    assert lanes == {pipeline.shipped}  # a shipped profile without packs shares its lane


def test_routes_are_cached_within_a_bound(tmp_path: Path) -> None:
    settings = Settings(
        agent=AgentSettings(state_dir=tmp_path, gateway_id="gw"),
        assets=AssetSettings(profiles=[Profile.model_validate(FIELD_PROFILE)]),
    )
    router: Router = build_pipeline(settings).router
    for i in range(MAX_ROUTES + 50):
        router.route(f"pump-{i}")
    assert len(router._routes) == MAX_ROUTES
    assert router.route("pump-0").profile is not None  # evicted, found again


def test_a_profile_whose_signals_the_model_does_not_read_is_refused(tmp_path: Path) -> None:
    bad = Profile(
        name="odd",
        match=["*"],
        model="shipped",
        signals=[SignalSpec(name="temperature"), SignalSpec(name="rpm", role="speed")],
    )
    settings = Settings(
        agent=AgentSettings(state_dir=tmp_path), assets=AssetSettings(profiles=[bad])
    )
    with pytest.raises(ConfigError) as err:
        profile_lanes(settings, "gw", load_manifest())
    assert "EDGE_ASSETS__PROFILES[0] (odd): signal rpm is not an input of the model" in str(
        err.value
    )


def test_a_profile_naming_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    gone = Profile(
        name="fitted", match=["*"], model=str(tmp_path / "nope.json"), signals=_signals_spec()
    )
    settings = Settings(
        agent=AgentSettings(state_dir=tmp_path), assets=AssetSettings(profiles=[gone])
    )
    with pytest.raises(ConfigError) as err:
        profile_lanes(settings, "gw", load_manifest())
    assert "EDGE_ASSETS__PROFILES[0] (fitted)" in str(err.value)
    assert "nope.json" in str(err.value)


def _signals_spec() -> list[SignalSpec]:
    return [SignalSpec(name="temperature")]


def test_scale_and_offset_apply_to_readings_over_mqtt(broker: Broker, tmp_path: Path) -> None:
    """Pumps publishing °F and kPa under their own names, put right by a profile."""
    fault = FaultSpec("cavitation", 300.0)
    pumps = [
        PumpStream(f"pump-{i}", seed=300 + i, start_ts=START, fault=fault if i == 2 else None)
        for i in (1, 2)
    ]
    listener = Listener(broker, "edge-agent/gw-test/recommendations/#")
    env = {"EDGE_ASSETS__PROFILES": json.dumps([FIELD_PROFILE])}
    agent = AgentProcess(broker, tmp_path / "state", env)
    agent.start()
    received: list[dict[str, object]] = []
    try:
        agent.wait_for_log("agent running")
        time.sleep(0.5)
        for _ in range(700):
            for pump in pumps:
                ts, v = pump.step()
                body = {
                    "ts": ts,
                    "temp_f": v["temperature"] * 9 / 5 + 32,
                    "p_kpa": v["pressure"] * 100,
                    "vibration": v["vibration"],
                    "current": v["current"],
                    "flow": v["flow"],
                }
                listener.publish(f"plant/{pump.asset}/telemetry", json.dumps(body).encode())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not received:
            received += [json.loads(p) for _, p in listener.drain()]
            time.sleep(0.2)
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.kill()
        listener.close()
    raises = [r for r in received if r["kind"] == "raise"]
    assert raises, agent.log_text()
    assert {r["asset"] for r in received} == {"pump-2"}
    first = raises[0]
    assert first["cause"]["class"] == "cavitation"  # type: ignore[index]
    means = {s["signal"]: s["mean"] for s in first["signals"]}  # type: ignore[attr-defined]
    if "pressure" in means:  # in bar, as the profile made it, not kPa
        assert 0.1 < means["pressure"] < 20.0, means
    if "temperature" in means:  # in °C, not °F
        assert 10.0 < means["temperature"] < 120.0, means
