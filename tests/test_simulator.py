"""The plant simulator: determinism, physics, and each fault's effect."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.simulator.plant import (
    FAULTS,
    SIGNALS,
    FaultSpec,
    PumpStream,
    Trace,
    signature_of,
    simulate,
)

HOUR = 3600


def test_names_and_order() -> None:
    assert SIGNALS == ("temperature", "vibration", "current", "pressure", "flow")
    assert len(FAULTS) == 6


def test_same_seed_same_values_and_seed_matters() -> None:
    a = simulate("p1", 7, 600)
    b = simulate("p1", 7, 600)
    c = simulate("p1", 8, 600)
    d = simulate("p2", 7, 600)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert not np.allclose(a.values, d.values)


@pytest.mark.parametrize(
    "fault", [None, FaultSpec("cavitation", 200.0), FaultSpec("stuck_sensor", 150.0, "flow")]
)
def test_stream_equals_simulate(fault: FaultSpec | None) -> None:
    trace = simulate("p3", 11, 5000, start_ts=1_000.0, fault=fault)
    stream = PumpStream("p3", 11, start_ts=1_000.0, fault=fault)
    for k in range(5000):
        ts, values = stream.step()
        assert ts == trace.ts[k]
        assert [values[s] for s in SIGNALS] == trace.values[k].tolist()


def test_normal_operation_is_plausible() -> None:
    t = simulate("p4", 3, 24 * HOUR)
    temp, _vib, cur, pres, flow = t.values.T
    assert temp.min() > 10
    assert temp.max() < 80
    assert flow.max() < 120
    assert pres.max() < 7
    assert cur.max() < 35
    # The load changes and the pump stops and starts during a day.
    running = flow > 10
    assert 0.5 < running.mean() < 1.0
    assert np.count_nonzero(np.diff(running.astype(int)) == 1) >= 2
    # Flow, pressure and current follow the load together.
    assert np.corrcoef(flow, pres)[0, 1] > 0.95
    assert np.corrcoef(flow, cur)[0, 1] > 0.95
    # Temperature lags current: it follows current from minutes earlier best.
    lags = [0, 60, 120, 200, 300, 600]
    corr = [np.corrcoef(cur[: cur.size - lag], temp[lag:])[0, 1] for lag in lags]
    assert 60 <= lags[int(np.argmax(corr))] <= 600
    assert (t.label == 0).all()
    np.testing.assert_array_equal(t.values, t.normal)


def _effect(
    kind: str, signal: str | None = None, onset: float = 1800.0, hours: float = 1.0
) -> tuple[Trace, np.ndarray, int]:
    t = simulate("p5", 21, onset + hours * HOUR, fault=FaultSpec(kind, onset, signal))
    return t, t.values - t.normal, int(onset)


def test_labels_start_at_onset() -> None:
    t, _, onset = _effect("overheating")
    assert (t.label[:onset] == 0).all()
    assert (t.label[onset:] == 1 + FAULTS.index("overheating")).all()
    assert t.signature == "temperature"


def test_bearing_wear_is_slow_and_vibration_leads_temperature() -> None:
    t, d, onset = _effect("bearing_wear", hours=3.0)
    vib, temp = d[:, 1], d[:, 0]
    assert np.abs(vib[onset : onset + 600]).max() < 0.1  # nothing in the first ten minutes
    assert vib[-600:].mean() > 1.5
    first_vib = np.argmax(np.abs(vib) > 0.5)
    first_temp = np.argmax(np.abs(temp) > 2.0)
    assert onset < first_vib < first_temp
    assert t.signature == "vibration"


def test_cavitation_drops_pressure_and_flow_and_shakes() -> None:
    t, d, onset = _effect("cavitation")
    after = slice(onset + 30, onset + 600)
    rel_p = d[after, 3] / t.normal[after, 3]
    assert rel_p.mean() < -0.2
    assert d[after, 1].mean() > 0.1
    assert d[after, 4].mean() < 0
    assert np.std(d[after, 4]) > 1.0  # erratic flow
    assert t.signature == "pressure"


def test_misalignment_steps_vibration_and_current() -> None:
    _, d, onset = _effect("misalignment")
    assert d[onset + 60 : onset + 600, 1].mean() > 0.8
    assert d[onset + 60 : onset + 600, 2].mean() > 0.2


def test_overheating_is_fast() -> None:
    _, d, onset = _effect("overheating")
    assert d[onset + 60, 0] > 5.0
    assert d[onset - 1, 0] == 0.0
    assert np.abs(d[:, 1:]).max() == 0.0  # only temperature


@pytest.mark.parametrize("signal", SIGNALS)
def test_stuck_sensor_freezes_only_its_signal(signal: str) -> None:
    t, d, onset = _effect("stuck_sensor", signal)
    k = SIGNALS.index(signal)
    frozen = t.values[onset:, k]
    assert (frozen == frozen[0]).all()
    assert frozen[0] == t.values[onset - 1, k]
    others = [j for j in range(5) if j != k]
    assert np.abs(d[:, others]).max() == 0.0
    assert t.signature == signal == signature_of(t.fault)  # type: ignore[arg-type]


def test_drifting_sensor_is_linear_and_alone() -> None:
    _, d, onset = _effect("drifting_sensor", "pressure")
    walk = d[onset:, 3]
    slope = np.polyfit(np.arange(walk.size), walk, 1)[0]
    np.testing.assert_allclose(walk, slope * np.arange(walk.size), atol=1e-9)
    assert abs(slope) * HOUR > 1.0
    assert np.abs(d[:, [0, 1, 2, 4]]).max() == 0.0


def test_sensor_fault_without_signal_gets_one_from_the_seed() -> None:
    a = simulate("p6", 4, 100, fault=FaultSpec("stuck_sensor", 50.0))
    b = simulate("p6", 4, 100, fault=FaultSpec("stuck_sensor", 50.0))
    assert a.fault is not None
    assert a.fault.signal in SIGNALS
    assert a.fault == b.fault


def test_bad_fault_specs_are_rejected() -> None:
    with pytest.raises(ValueError, match="fault kind"):
        FaultSpec("rust", 0.0)
    with pytest.raises(ValueError, match="fault signal"):
        FaultSpec("stuck_sensor", 0.0, "humidity")
