"""Labelled scenario sets for training, threshold calibration and evaluation.

Each set uses its own seeds, so the model is calibrated and evaluated on plants it never
saw. A scenario is one asset: either normal operation (load changes, stops and starts) or
a run that develops one fault at a stated onset.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.simulator.plant import FAULTS, SENSOR_FAULTS, SIGNALS, FaultSpec, Trace, simulate

HOUR = 3600.0
# How long each fault kind is followed after its onset: bearing wear and drift are slow.
FOLLOW_S: dict[str, float] = {
    "bearing_wear": 3.0 * HOUR,
    "cavitation": 0.75 * HOUR,
    "misalignment": 0.75 * HOUR,
    "overheating": 0.75 * HOUR,
    "stuck_sensor": 0.75 * HOUR,
    "drifting_sensor": 2.0 * HOUR,
}
# Faults whose onset is a step: the detection-delay target (60 s) applies to them.
ABRUPT: frozenset[str] = frozenset({"cavitation", "overheating", "stuck_sensor"})

TRAIN_SEED0 = 1_000
CALIBRATION_SEED0 = 5_000
EVAL_SEED0 = 9_000


@dataclass(frozen=True)
class Scenario:
    """One asset's run: normal when `fault` is None."""

    name: str
    asset: str
    seed: int
    duration_s: float
    fault: FaultSpec | None = None

    def run(self) -> Trace:
        """Simulate the scenario."""
        return simulate(self.asset, self.seed, self.duration_s, fault=self.fault)


def normal_set(seed0: int, assets: int, hours: float) -> list[Scenario]:
    """`assets` pumps in normal operation for `hours` each."""
    return [
        Scenario(f"normal-{seed0 + i}", f"pump-{seed0 + i}", seed0 + i, hours * HOUR)
        for i in range(assets)
    ]


def fault_set(seed0: int, per_kind: int, sensor_factor: int = 1) -> list[Scenario]:
    """`per_kind` runs of each fault; sensor faults cycle through the signals.

    Sensor faults get `sensor_factor` times as many runs: each is five faults in one (one
    per signal), and a drifting sensor on one signal can mimic a physical fault on it.
    """
    out: list[Scenario] = []
    for k, kind in enumerate(FAULTS):
        runs = per_kind * sensor_factor if kind in SENSOR_FAULTS else per_kind
        for i in range(runs):
            seed = seed0 + 100 * (k + 1) + i
            onset = 1200.0 + float((seed * 487) % 1800)
            signal = SIGNALS[i % len(SIGNALS)] if kind in SENSOR_FAULTS else None
            fault = FaultSpec(kind, onset, signal)
            name = f"{kind}-{signal}-{seed}" if signal else f"{kind}-{seed}"
            out.append(Scenario(name, f"pump-{seed}", seed, onset + FOLLOW_S[kind], fault))
    return out


def training_set(scale: float = 1.0) -> list[Scenario]:
    """Normal and faulty runs the model learns from; `scale` < 1 makes a reduced set."""
    assets = max(2, round(12 * scale))
    per_kind = max(2, round(10 * scale))
    return normal_set(TRAIN_SEED0, assets, 6.0) + fault_set(TRAIN_SEED0, per_kind, 2)


def calibration_set(scale: float = 1.0) -> list[Scenario]:
    """Held-out normal operation that sets the anomaly threshold."""
    return normal_set(CALIBRATION_SEED0, max(2, round(8 * scale)), 24.0)


def evaluation_set() -> tuple[list[Scenario], list[Scenario]]:
    """Held-out (normal days, fault runs) for `make eval`: seeds no other set uses."""
    return normal_set(EVAL_SEED0, 10, 24.0), fault_set(EVAL_SEED0, 10)
