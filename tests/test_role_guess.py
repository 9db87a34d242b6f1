"""Roles guessed from signal names, for `model fit` and `model eval` when --roles is not given."""

from __future__ import annotations

import pytest

from edge_agent.core.assets import guess_role


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("Accelerometer1RMS", "vibration"),
        ("vib_de_mm_s", "vibration"),
        ("VibAmplitude", "vibration"),
        ("Current", "current"),
        ("motor_amps", "current"),
        ("Pressure", "pressure"),
        ("DischargePressure", "pressure"),
        ("Temperature", "temperature"),
        ("Thermocouple", "temperature"),
        ("bearing_temp_C", "temperature"),
        ("Voltage", "voltage"),
        ("Volume Flow RateRMS", "flow"),
        ("motor_speed_rpm", "speed"),
        ("PT-101", "other"),
        ("x1", "other"),
    ],
)
def test_a_name_suggests_its_role(name: str, role: str) -> None:
    assert guess_role(name) == role
