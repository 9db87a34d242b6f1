"""The fit: tolerances by role, thresholds, refusals, the step warning, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.errors import ConfigError, DataError
from edge_agent.models.learn.fit import (
    MIN_WINDOWS,
    THR_MIN,
    WINDOW,
    FitOptions,
    fit,
    min_rows,
)
from edge_agent.models.learn.job import Output, fit_csv

SIGNALS = ["vibration", "current", "pressure", "temperature", "flow"]
ROLES = ["vibration", "current", "pressure", "temperature", "flow"]
UNITS = ["mm/s", "A", "bar", "degC", "m3/h"]


def opts(
    units: list[str] = UNITS, *, tolerance_pct: dict[str, float] | None = None, seed: int = 0
) -> FitOptions:
    return FitOptions(
        units=dict(zip(SIGNALS, units, strict=True)), tolerance_pct=tolerance_pct or {}, seed=seed
    )


def healthy(n: int = 600, seed: int = 3) -> np.ndarray:
    """A pump at steady duty: noise around each signal's level, flow whole m3/h."""
    rng = np.random.default_rng(seed)
    level = np.array([2.0, 12.0, 3.0, 45.0, 80.0])
    noise = np.array([0.05, 0.2, 0.02, 0.1, 0.6])
    rows = level + noise * rng.standard_normal((n, 5))
    rows[:, 4] = np.round(rows[:, 4])  # a flow meter reporting whole m3/h
    return rows


def test_the_fit_follows_the_role_table() -> None:
    f = fit(healthy(), SIGNALS, ROLES, opts())
    by = {s.name: s for s in f.per_signal}
    assert by["vibration"].floor == pytest.approx(0.01 * 2.0, rel=0.02)  # 1 % of the level
    assert by["current"].floor == pytest.approx(0.03 * 12.0, rel=0.02)
    assert by["pressure"].floor == 0.01  # absolute, bar
    assert by["temperature"].floor == 2.0  # absolute, K
    assert by["flow"].quantised
    assert by["flow"].floor == pytest.approx(1.0)  # the resolution beats 0.5 % of 80
    assert not by["current"].quantised
    for s in f.per_signal:
        assert s.t >= THR_MIN
        assert s.std == pytest.approx(s.s * s.t)
        assert s.s == max(s.spread, s.floor)
    np.testing.assert_allclose(f.mean, np.median(healthy(), axis=0), rtol=0.01)
    assert f.window == WINDOW
    assert f.windows == 600 - WINDOW + 1
    assert f.warnings == ()


def test_units_convert_an_absolute_floor_and_an_unknown_unit_warns() -> None:
    rows = healthy()
    rows[:, 2] *= 100  # kPa
    f = fit(rows, SIGNALS, ROLES, opts(["mm/s", "A", "kPa", "°F", "m3/h"]))
    assert f.per_signal[2].floor == pytest.approx(1.0)  # 0.01 bar = 1 kPa
    assert f.per_signal[3].floor == pytest.approx(3.6)  # 2 K = 3.6 degF
    g = fit(rows, SIGNALS, ROLES, opts(["mm/s", "A", "inH2O", "degC", "m3/h"]))
    assert len(g.warnings) == 1
    assert "signal 'pressure' (pressure): unit 'inH2O' is not one of bar, mbar" in g.warnings[0]
    h = fit(rows, SIGNALS, ROLES, opts(["", "", "", "degC", ""]))
    said = "signal 'pressure' (pressure): no unit; its tolerance floor 0.01 is taken in its own "
    assert h.warnings == (said + "unit as if it were bar",)


def test_tolerance_pct_overrides_the_role() -> None:
    f = fit(healthy(), SIGNALS, ROLES, opts(tolerance_pct={"current": 10.0}))
    assert f.per_signal[1].floor_kind == "relative"
    assert f.per_signal[1].floor == pytest.approx(0.10 * 12.0, rel=0.02)
    assert f.per_signal[1].limited_by == "floor"
    with pytest.raises(ConfigError, match=r"signal 'current': tolerance_pct=0\.0 must be above"):
        fit(healthy(), SIGNALS, ROLES, opts(tolerance_pct={"current": 0.0}))


def test_a_bad_role_or_count_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="signal 'flow': role 'flux' is not one of vibration"):
        fit(healthy(), SIGNALS, [*ROLES[:4], "flux"])
    with pytest.raises(ConfigError, match="4 roles for 5 signals"):
        fit(healthy(), SIGNALS, ROLES[:4])


def test_the_model_never_holds_nan_or_a_zero_std() -> None:
    rng = np.random.default_rng(9)
    for case in range(40):
        n = int(rng.integers(min_rows(), 900))
        scale = 10.0 ** rng.uniform(-6, 6, 5)
        rows = healthy(n, seed=case) * scale
        if case % 3 == 0:
            step = np.array([0.05, 0.2, 0.02, 0.1, 1.0]) * scale  # as coarse as the noise
            rows = np.round(rows / step) * step
        if case % 5 == 0:
            rows[: n // 2, 0] = rows[0, 0]  # half the rows stuck at one value
        f = fit(rows, SIGNALS, list(rng.choice(ROLES, 5)))
        assert np.isfinite(f.mean).all()
        assert np.isfinite(f.std).all()
        assert (f.std.astype(np.float32) > 0).all()
        assert np.isfinite(1 / f.std.astype(np.float32)).all()


def test_a_signal_at_zero_that_never_moves_its_window_means_is_refused() -> None:
    rows = healthy()
    rows[:, 0] = 0.0  # exactly 0 for two thirds of the rows, then wandering: MAD 0, level 0
    rows[400:, 0] = np.random.default_rng(0).uniform(0, 1, 200)
    with pytest.raises(DataError, match="signal 'vibration' \\(vibration\\): its window means"):
        fit(rows, SIGNALS, ROLES)


def test_a_step_in_the_training_rows_warns() -> None:
    rows = healthy(800)
    rows[500:, 0] += 0.4  # vibration up 20 % from row 501: a fault already in the rows
    f = fit(rows, SIGNALS, ROLES, opts())
    assert len(f.warnings) == 1, f.warnings
    msg = f.warnings[0]
    assert msg.startswith("signal 'vibration' (vibration): its level shifts by +0.")
    assert "learning on data that already holds an anomaly" in msg
    # ... and says where: near row 501 (the split nearest the step)
    row = int(msg.split("around row ")[1].split(",")[0])
    assert 450 <= row <= 560


def test_steady_rows_and_slow_healthy_drift_do_not_warn() -> None:
    rows = healthy(3600)
    rows[:, 3] += np.linspace(0, 3, 3600)  # 3 K of warming within the 2 K-floored tolerance
    assert fit(rows, SIGNALS, ROLES, opts()).warnings == ()


def test_rows_that_cannot_make_a_model_are_refused_by_row_and_signal() -> None:
    rows = healthy()
    rows[37, 1] = np.nan
    with pytest.raises(DataError, match="row 38, signal 'current': nan is not a reading"):
        fit(rows, SIGNALS, ROLES)
    with pytest.raises(DataError, match=f"at least {MIN_WINDOWS + WINDOW - 1} consecutive rows"):
        fit(healthy(min_rows() - 1), SIGNALS, ROLES)
    # Two pieces that are long enough together but whose windows would cross the break:
    with pytest.raises(DataError, match="in 2 piece"):
        fit(healthy(min_rows() + 10), SIGNALS, ROLES, breaks=[60])
    rows = healthy()
    rows[:, 2] = 3.0
    with pytest.raises(DataError, match="signal 'pressure' is constant \\(3\\) from row 1 to"):
        fit(rows, SIGNALS, ROLES)


def test_windows_do_not_cross_a_break() -> None:
    a, b = healthy(300, seed=1), healthy(300, seed=2) + 0.5  # a level change between pieces
    f = fit(np.vstack([a, b]), SIGNALS, ROLES, breaks=[300])
    assert f.windows == 2 * (300 - WINDOW + 1)


def test_the_fit_is_deterministic_and_reports_progress() -> None:
    seen: list[tuple[float, str]] = []
    a = fit(healthy(), SIGNALS, ROLES, opts(seed=5), progress=lambda f, s: seen.append((f, s)))
    b = fit(healthy(), SIGNALS, ROLES, opts(seed=5))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    assert a.per_signal == b.per_signal
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0
    assert seen[-1] == (1.0, "fitted")


def _csv(path: Path, rows: np.ndarray, names: list[str] = SIGNALS) -> Path:
    lines = [";".join(["time", *names, "anomaly"])]
    for i, r in enumerate(rows):
        stamp = f"2024-05-01 {10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        lines.append(";".join([stamp, *(f"{v:.6g}" for v in r), "0"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_csv_refuses_too_few_rows_naming_files_and_lines(tmp_path: Path) -> None:
    path = _csv(tmp_path / "short.csv", healthy(60))
    with pytest.raises(DataError) as err:
        fit_csv([path], roles=dict(zip(SIGNALS, ROLES, strict=True)), out_dir=tmp_path / "m")
    assert str(err.value).startswith(
        f"too few rows: {path} line 2 to {path} line 61 holds 60 rows in 1 piece(s); a fit "
        f"needs at least {min_rows()} consecutive rows"
    )
    assert not (tmp_path / "m").exists()


def test_fit_csv_refuses_a_constant_signal_naming_file_lines_and_column(tmp_path: Path) -> None:
    rows = healthy()
    rows[:, 3] = 41.5
    path = _csv(tmp_path / "flat.csv", rows)
    with pytest.raises(DataError) as err:
        fit_csv(
            [path],
            roles=dict(zip(SIGNALS, ROLES, strict=True)),
            label_columns=["anomaly"],
            out_dir=tmp_path / "m",
        )
    assert str(err.value).startswith(
        f"signal 'temperature' is constant (41.5) from {path} line 2 to {path} line 601"
    )


def test_fit_csv_over_two_files_names_the_second_file(tmp_path: Path) -> None:
    first = _csv(tmp_path / "a.csv", healthy(300))
    rows = healthy(300)
    rows[:, 1] = np.nan
    second = _csv(tmp_path / "b.csv", rows)
    with pytest.raises(DataError, match=r"b\.csv line 2, column 3 'current': 'nan' is not"):
        fit_csv([first, second], roles={}, label_columns=["anomaly"], out_dir=tmp_path / "m")


def test_fit_csv_warns_of_signals_without_a_role_and_a_step(tmp_path: Path) -> None:
    rows = healthy(800)
    rows[400:, 1] += 3.0  # current +25 % half way
    result = fit_csv(
        [_csv(tmp_path / "s.csv", rows)],
        roles={"vibration": "vibration", "current": "current"},
        label_columns=["anomaly"],
        out_dir=tmp_path / "m",
        output=Output(tflite="off"),
    )
    assert "signal 'pressure' has no role: fitted as 'other'" in result.warnings
    steps = [w for w in result.warnings if "already holds an anomaly" in w]
    assert len(steps) == 1
    assert steps[0].startswith("signal 'current' (current)")
    assert "s.csv line " in steps[0]  # where, as a place in the file
    assert result.manifest.roles == ["vibration", "current", "other", "other", "other"]
