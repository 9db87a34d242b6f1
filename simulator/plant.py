"""A deterministic centrifugal pump and motor at 1 Hz, with injectable faults.

The plant is driven by a load profile (set-point changes, stops and starts) through a
first-order speed response. Flow follows speed, pressure its square (affinity laws), motor
current the shaft power, temperature lags the copper losses, and vibration grows with speed.
Every signal carries measurement noise. A fault changes the physics (bearing wear,
cavitation, misalignment, overheating) or the sensor (stuck, drifting) from its onset.

Determinism: each pump draws from four independent generators spawned from
(seed, asset): parameters, schedule, noise and fault. A fault never consumes the noise or
schedule streams, so `Trace.normal` (the same plant without the fault) differs from
`Trace.values` by the fault's effect alone. `simulate` runs the same stepping code as
`PumpStream`, so both produce identical values for the same arguments.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

SIGNALS: tuple[str, ...] = ("temperature", "vibration", "current", "pressure", "flow")
FAULTS: tuple[str, ...] = (
    "bearing_wear",
    "cavitation",
    "misalignment",
    "overheating",
    "stuck_sensor",
    "drifting_sensor",
)
SENSOR_FAULTS: frozenset[str] = frozenset({"stuck_sensor", "drifting_sensor"})

# The signal that must lead the explanation of each physical fault (sensor faults: their
# own signal). Misalignment shows in vibration first, like bearing wear; the classifier
# tells them apart by the step and the current rise, not by the leading signal.
SIGNATURES: dict[str, str] = {
    "bearing_wear": "vibration",
    "cavitation": "pressure",
    "misalignment": "vibration",
    "overheating": "temperature",
}

# Measurement noise (1 sigma), in each signal's unit, in SIGNALS order.
NOISE = (0.12, 0.04, 0.15, 0.03, 0.8)
# A span per signal: how far a drifting sensor walks per hour is a fraction of it.
SPAN = (40.0, 3.0, 30.0, 5.5, 100.0)
DRIFT_PER_HOUR = 0.45  # fraction of the span
# A worn bearing's defects hit the rolling elements: its vibration RMS gets spiky, not only
# higher (mm/s of half-normal spread at full wear). A drifting sensor only offsets.
BEARING_IMPACTS = 0.35

_BLOCK = 4096  # noise is drawn in blocks; simulate and PumpStream share the block layout
_SPEED_TAU_S = 20.0  # soft-starter / VFD ramp
_THERMAL_TAU_S = 400.0  # motor winding time constant
_COOLING_LOSS_TAU_S = 90.0  # overheating approaches its new equilibrium this fast
_BEARING_RAMP_S = 7200.0  # bearing wear reaches full severity after about two hours
_QUIET_BEFORE_S = 600.0  # no stop this long before a fault's onset ...
_QUIET_AFTER_S = 1800.0  # ... nor this long after, so the fault shows while running


@dataclass(frozen=True)
class FaultSpec:
    """A fault to inject: kind, onset (seconds after the start), signal (sensor faults only)."""

    kind: str
    onset_s: float
    signal: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULTS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {', '.join(FAULTS)}")
        if self.signal is not None and self.signal not in SIGNALS:
            raise ValueError(f"fault signal {self.signal!r} is not one of {', '.join(SIGNALS)}")
        if self.onset_s < 0:
            raise ValueError(f"fault onset_s must be >= 0, got {self.onset_s}")


@dataclass(frozen=True)
class Trace:
    """A simulated recording of one asset at 1 Hz."""

    asset: str
    ts: np.ndarray  # (T,) float64 epoch seconds
    values: np.ndarray  # (T, 5) float64, SIGNALS order
    label: np.ndarray  # (T,) int: 0 normal, else 1 + FAULTS.index(kind) once the fault is active
    fault: FaultSpec | None
    signature: str | None
    normal: np.ndarray  # (T, 5) the same plant without the fault (same noise, same schedule)


def signature_of(fault: FaultSpec) -> str:
    """Return the signal that must lead the explanation of `fault`."""
    if fault.kind in SENSOR_FAULTS:
        if fault.signal is None:  # pragma: no cover - _Plant fills it in
            raise ValueError(f"{fault.kind} needs a signal")
        return fault.signal
    return SIGNATURES[fault.kind]


class _Plant:
    """The stepping core shared by `simulate` and `PumpStream`."""

    def __init__(self, asset: str, seed: int, fault: FaultSpec | None) -> None:
        seq = np.random.SeedSequence([seed, zlib.crc32(asset.encode())])
        params, sched, noise, faults = (np.random.default_rng(s) for s in seq.spawn(4))
        self._sched = sched
        self._noise_rng = noise
        self._fault_rng = faults
        # Each pump differs a little from its data sheet.
        self.q_nom = 100.0 * params.uniform(0.95, 1.05)
        self.p_nom = 5.5 * params.uniform(0.95, 1.05)
        self.i_nom = 30.0 * params.uniform(0.95, 1.05)
        self.v_base = params.uniform(0.9, 1.1)
        self.ambient = params.uniform(18.0, 28.0)
        self.rise = 30.0 * params.uniform(0.9, 1.1)
        drift_sign = 1.0 if faults.random() < 0.5 else -1.0
        if fault is not None and fault.kind in SENSOR_FAULTS and fault.signal is None:
            fault = FaultSpec(fault.kind, fault.onset_s, SIGNALS[int(faults.integers(5))])
        self.fault = fault
        self._drift_sign = drift_sign
        self._sig = SIGNALS.index(fault.signal) if fault and fault.signal else -1
        # Schedule: start running at a steady set-point, warm.
        self._target = float(sched.uniform(0.45, 1.0))
        self._seg_end = float(sched.uniform(60.0, 900.0))
        self._speed = self._target
        self._temp = self._steady_temp(self._target)
        self._temp_clean = self._temp
        self._heat = 0.0  # overheating: extra degrees from lost cooling
        self._stuck: list[float] | None = None
        self._last: list[float] = []
        self._t = 0  # seconds since start
        self._noise = np.empty((0, 6))
        self._fnoise = np.empty((0, 2))

    def _steady_temp(self, speed: float) -> float:
        current = 0.2 * speed + 0.8 * speed * speed
        return self.ambient + self.rise * current * current

    def _quiet(self, start: float, end: float) -> bool:
        """Whether a stop over [start, end) would hide the fault's onset."""
        if self.fault is None:
            return False
        lo = self.fault.onset_s - _QUIET_BEFORE_S
        hi = self.fault.onset_s + _QUIET_AFTER_S
        return start < hi and end > lo

    def _next_segment(self, t: float) -> None:
        rng = self._sched
        if self._target > 0 and rng.random() < 0.15:
            length = float(rng.uniform(180.0, 1200.0))
            if not self._quiet(t, t + length + 120.0):
                self._target, self._seg_end = 0.0, t + length
                return
        self._target = float(rng.uniform(0.45, 1.0))
        self._seg_end = t + float(np.clip(rng.exponential(900.0), 120.0, 3600.0))

    def step(self) -> tuple[list[float], list[float]]:
        """Advance one second; return (measured, measured-without-fault) in SIGNALS order."""
        t = float(self._t)
        i = self._t % _BLOCK
        if i == 0:
            self._noise = self._noise_rng.standard_normal((_BLOCK, 6))
            if self.fault is not None:
                self._fnoise = self._fault_rng.standard_normal((_BLOCK, 2))
        n = self._noise[i]
        if t >= self._seg_end:
            self._next_segment(t)
        self._speed += (self._target - self._speed) / _SPEED_TAU_S
        # Process jitter moves flow, pressure and current together, as a real load does.
        speed = max(0.0, self._speed * (1.0 + 0.004 * n[5]))
        flow = self.q_nom * speed
        pressure = self.p_nom * speed * speed
        load = 0.2 * speed + 0.8 * speed * speed
        current = self.i_nom * load
        vibration = self.v_base * (0.3 + 2.2 * speed)
        self._temp_clean += (self.ambient + self.rise * load * load - self._temp_clean) / (
            _THERMAL_TAU_S
        )
        clean = [self._temp_clean, vibration, current, pressure, flow]

        fault = self.fault
        age = t - fault.onset_s if fault is not None else -1.0
        true = [0.0, vibration, current, pressure, flow]
        extra_heat = self._physical_fault(age, speed, t, self._fnoise[i], true) if age >= 0 else 0.0
        self._temp += (self.ambient + self.rise * load * load + extra_heat - self._temp) / (
            _THERMAL_TAU_S
        )
        true[0] = self._temp + self._heat
        measured = [true[k] + NOISE[k] * n[k] for k in range(5)]
        normal = [clean[k] + NOISE[k] * n[k] for k in range(5)]
        if age >= 0 and self._sig >= 0:
            self._sensor_fault(age, measured)
        self._last = measured
        self._t += 1
        return measured, normal

    def _physical_fault(
        self, age: float, speed: float, t: float, f: np.ndarray, true: list[float]
    ) -> float:
        """Apply a physical fault `age` seconds old to `true` in place; return its extra heat."""
        kind = self.fault.kind if self.fault is not None else ""
        if kind == "bearing_wear":
            sev = min(1.0, age / _BEARING_RAMP_S) ** 2
            true[1] += self.v_base * sev * (3.0 * (0.4 + 0.6 * speed) + BEARING_IMPACTS * abs(f[0]))
            return float(14.0 * sev**1.5 * min(1.0, speed / 0.3))
        if kind == "cavitation":
            sev = min(1.0, age / 8.0) * min(1.0, speed / 0.4)
            true[3] *= 1.0 - 0.45 * sev
            # Collapsing vapour bubbles rattle the impeller harder the faster it turns.
            true[1] += self.v_base * sev * speed * speed * (0.15 + 0.2 * abs(f[0]))
            true[4] *= 1.0 - sev * (0.08 + 0.04 * f[1])
            true[2] *= 1.0 - 0.03 * sev
        elif kind == "misalignment":
            # The coupling beats against the shaft: RMS rises and swings with a period of
            # seconds, and the motor works harder against the bent load.
            sev = min(1.0, age / 20.0)
            beat = 1.0 + 0.15 * math.sin(2.0 * math.pi * t / 7.0)
            true[1] += self.v_base * sev * 1.6 * (0.3 + 0.7 * speed) * beat
            true[2] *= 1.0 + 0.06 * sev
        elif kind == "overheating":
            target = 35.0 * max(0.3, speed)
            self._heat += (target - self._heat) / _COOLING_LOSS_TAU_S
        return 0.0

    def _sensor_fault(self, age: float, measured: list[float]) -> None:
        """Apply a stuck or drifting sensor `age` seconds old to `measured` in place."""
        k = self._sig
        if self.fault is not None and self.fault.kind == "stuck_sensor":
            if self._stuck is None:
                self._stuck = list(self._last) if self._last else list(measured)
            measured[k] = self._stuck[k]
        elif self.fault is not None and self.fault.kind == "drifting_sensor":
            rate = self._drift_sign * DRIFT_PER_HOUR * SPAN[k] / 3600.0
            measured[k] += rate * age

    @property
    def label(self) -> int:
        """Label of the sample the next `step` produces."""
        if self.fault is None or self._t < self.fault.onset_s:
            return 0
        return 1 + FAULTS.index(self.fault.kind)


class PumpStream:
    """The live, step-by-step simulator: one (ts, {signal: value}) per call at 1 Hz."""

    def __init__(
        self, asset: str, seed: int, start_ts: float, fault: FaultSpec | None = None
    ) -> None:
        self.asset = asset
        self._plant = _Plant(asset, seed, fault)
        self._start = start_ts
        self._n = 0

    @property
    def fault(self) -> FaultSpec | None:
        """The injected fault, with the sensor filled in where it was left to the seed."""
        return self._plant.fault

    def step(self) -> tuple[float, dict[str, float]]:
        """Return the next sample's timestamp and values."""
        values, _ = self._plant.step()
        ts = self._start + self._n
        self._n += 1
        return ts, dict(zip(SIGNALS, values, strict=True))


def simulate(
    asset: str,
    seed: int,
    duration_s: float,
    start_ts: float = 1.7e9,
    fault: FaultSpec | None = None,
) -> Trace:
    """Simulate `duration_s` seconds of one asset at 1 Hz."""
    if duration_s < 1:
        raise ValueError(f"duration_s must be >= 1, got {duration_s}")
    plant = _Plant(asset, seed, fault)
    count = math.floor(duration_s)
    values = np.empty((count, 5))
    normal = np.empty((count, 5))
    label = np.zeros(count, dtype=np.int64)
    for k in range(count):
        label[k] = plant.label
        values[k], normal[k] = plant.step()
    ts = start_ts + np.arange(count, dtype=np.float64)
    spec = plant.fault
    return Trace(
        asset=asset,
        ts=ts,
        values=values,
        label=label,
        fault=spec,
        signature=signature_of(spec) if spec is not None else None,
        normal=normal,
    )
