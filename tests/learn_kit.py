"""A small machine for learning tests: three signals of a pump, normal or with a fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_agent.core.assets import Profile
from edge_agent.core.readings import Reading
from edge_agent.models.learn.fit import FitOptions
from edge_agent.models.learn.job import Output, fit_rows
from edge_agent.models.manifest import Manifest

START = 1_750_000_000.0
LEVELS = {"vib": 2.0, "flow": 80.0, "pressure": 4.0}
NOISE = {"vib": 0.02, "flow": 0.3, "pressure": 0.01}
PROFILE_JSON: dict[str, object] = {
    "name": "small-pump",
    "match": ["sp-*"],
    "model": "learn",
    "learn_period_s": 200,
    "signals": [
        {"name": "vib", "source": "vib_raw", "role": "vibration", "unit": "mm/s", "scale": 0.5},
        {"name": "flow", "role": "flow", "unit": "m3/h"},
        {"name": "pressure", "role": "pressure", "unit": "bar"},
    ],
}
PROFILE = Profile.model_validate(PROFILE_JSON)


def rows(n: int, seed: int, *, flow_drop_from: int | None = None, drop: float = 0.15) -> np.ndarray:
    """[n, 3] rows in the profile's units (vib, flow, pressure); flow falls by `drop` later."""
    rng = np.random.default_rng(seed)
    out = np.column_stack(
        [LEVELS[s] + rng.normal(0.0, NOISE[s], n) for s in ("vib", "flow", "pressure")]
    )
    if flow_drop_from is not None:
        out[flow_drop_from:, 1] *= 1.0 - drop
        out[flow_drop_from:, 0] *= 1.2  # vibration up: a restricted suction
    return out


def readings(asset: str, values: np.ndarray, first: int = 0) -> list[list[Reading]]:
    """One batch per row as a connector delivers them (vib under its source name, raw)."""
    out = []
    for k, (vib, flow, pressure) in enumerate(values.tolist()):
        ts = START + first + k
        out.append(
            [
                Reading(asset, "vib_raw", ts, vib / 0.5),  # the profile scales it back
                Reading(asset, "flow", ts, flow),
                Reading(asset, "pressure", ts, pressure),
            ]
        )
    return out


def payloads(values: np.ndarray, first: int = 0) -> list[bytes]:
    """One JSON message per row, as a pump publishes it."""
    return [
        json.dumps({"ts": START + first + k, "vib_raw": v / 0.5, "flow": f, "pressure": p}).encode()
        for k, (v, f, p) in enumerate(values.tolist())
    ]


def fitted(out_dir: Path, n: int = 300, seed: int = 1) -> Manifest:
    """A learned model of the small pump, fitted in this process."""
    result = fit_rows(
        rows(n, seed),
        ["vib", "flow", "pressure"],
        ["vibration", "flow", "pressure"],
        out_dir,
        FitOptions(units={"vib": "mm/s", "flow": "m3/h", "pressure": "bar"}),
        output=Output(name="small-pump", tflite="off"),
    )
    return result.manifest
