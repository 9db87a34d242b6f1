"""A learned model on real pump data (SKAB, read from ../shared/datasets/skab-dev)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.models.learn.csvdata import read_csv
from edge_agent.models.learn.fit import FitOptions
from edge_agent.models.learn.job import Output, fit_csv
from edge_agent.models.scorer import Scorer

SKAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab-dev"
ROLES = {
    "Accelerometer1RMS": "vibration",
    "Accelerometer2RMS": "vibration",
    "Current": "current",
    "Pressure": "pressure",
    "Temperature": "temperature",
    "Thermocouple": "temperature",
    "Voltage": "voltage",
    "Volume Flow RateRMS": "flow",
}
UNITS = {"Pressure": "bar", "Temperature": "degC", "Thermocouple": "degC"}
LABELS = ["anomaly", "changepoint"]

pytestmark = pytest.mark.skipif(
    not (SKAB / "valve1" / "3.csv").is_file(),
    reason=f"the SKAB data set is not at {SKAB} (it is never copied into the project)",
)


def test_valve1_3_first_400_rows_make_a_model_that_sees_the_anomaly(tmp_path: Path) -> None:
    path = SKAB / "valve1" / "3.csv"
    result = fit_csv(
        [path],
        roles=ROLES,
        options=FitOptions(units=UNITS),
        label_columns=LABELS,
        max_rows=400,
        out_dir=tmp_path,
        output=Output(tflite="off"),
    )
    assert result.warnings == ()
    for art in result.manifest.artifacts:
        assert (tmp_path / art.file).stat().st_size <= 100_000
    table = read_csv(path, label_columns=LABELS)
    assert table.signals == tuple(result.manifest.signals)
    x = np.lib.stride_tricks.sliding_window_view(table.rows, (15, 8))[:, 0].astype(np.float32)
    anomalous = table.labels["anomaly"][14:] == 1  # the label of each window's last row
    out = Scorer(result.manifest, onnx_providers=("CPUExecutionProvider",)).score(x)
    assert out.score[anomalous].max() > 1.0
    assert (out.score[anomalous] > 1.0).mean() > 0.5
    # The rows it learned from (windows ending before CSV row 400) stay normal.
    learned = table.lines[14:] <= 401
    assert out.score[learned].max() < 1.0
