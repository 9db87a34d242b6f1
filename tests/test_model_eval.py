"""`edge-agent model fit | eval | export` on CSV files the test writes (no shared data needed)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.cli import main
from edge_agent.daemon.learning.scoring import Counts, alarms, counts, delays, episodes
from edge_agent.models.manifest import load_manifest
from tests import learn_kit as kit

ROLES = "vib=vibration,flow=flow,pressure=pressure"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGE_"):
            monkeypatch.delenv(name)


def _write(path: Path, values: np.ndarray, label: np.ndarray | None, sep: str = ";") -> Path:
    head = ["datetime", "vib", "flow", "pressure"] + (
        ["anomaly", "changepoint"] if label is not None else []
    )
    lines = [sep.join(head)]
    for k, row in enumerate(values.tolist()):
        when = f"2024-01-01 00:{k // 60 % 60:02d}:{k % 60:02d}" if k < 3600 else None
        assert when is not None
        cells = [when, *(f"{v:.5f}" for v in row)]
        if label is not None:
            cells += [f"{label[k]:.1f}", "0.0"]
        lines.append(sep.join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def _file(folder: Path, name: str, seed: int, onset: int = 600, sep: str = ";") -> Path:
    values = kit.rows(900, seed, flow_drop_from=onset)
    label = np.zeros(900)
    label[onset:] = 1
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder / name, values, label, sep)


def test_eval_scores_each_file_and_writes_the_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    _file(data / "a", "1.csv", 31)
    _file(data / "a", "2.csv", 32, onset=700, sep=",")  # another delimiter, detected
    _write(data / "normal.csv", kit.rows(600, 33), None)  # no label: not scored, said so
    out = tmp_path / "eval.json"
    argv = ["model", "eval", "--data", str(data), "--train-rows", "400", "--label", "anomaly"]
    argv += ["--label-columns", "changepoint", "--roles", ROLES, "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "a/1.csv" in printed
    assert "normal.csv" in printed
    assert "not scored" in printed
    figures = json.loads(out.read_text())
    assert {"f1", "far", "mar", "files"} <= set(figures)
    assert figures["f1"] > 0.9
    assert figures["far"] < 5.0
    files = {f["file"]: f for f in figures["files"]}
    assert files["normal.csv"]["skipped"]
    one = files["a/1.csv"]
    assert one["rows"] == 500  # rows 401..900 are scored
    assert one["tp"] + one["fp"] + one["fn"] + one["tn"] == 500
    assert one["first_alarm"]["role"] in ("flow", "vibration")
    assert one["median_delay_s"] is not None
    assert one["median_delay_s"] < 30


def test_eval_names_the_file_line_and_column_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _file(tmp_path / "data", "bad.csv", 34)
    lines = bad.read_text().split("\n")
    lines[10] = lines[10].replace(lines[10].split(";")[2], "n/a")
    bad.write_text("\n".join(lines))
    argv = ["model", "eval", "--data", str(tmp_path / "data"), "--train-rows", "400"]
    argv += ["--label", "anomaly", "--label-columns", "changepoint", "--roles", ROLES]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "bad.csv line 11, column 3 'flow'" in printed
    assert "'n/a' is not a number" in printed


def test_eval_refuses_roles_of_columns_it_does_not_have(tmp_path: Path) -> None:
    _file(tmp_path / "data", "1.csv", 35)
    argv = ["model", "eval", "--data", str(tmp_path / "data"), "--train-rows", "400"]
    argv += ["--label", "anomaly", "--label-columns", "changepoint", "--roles", "rpm=speed"]
    assert main(argv) == 2


def test_fit_writes_a_model_and_a_bundle_ready_to_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = _write(tmp_path / "normal.csv", kit.rows(600, 36), None)
    out, bundle = tmp_path / "model", tmp_path / "bundle"
    argv = ["model", "fit", "--csv", str(csv), "--roles", ROLES, "--units", "pressure=bar"]
    argv += ["--out", str(out), "--tflite", "off", "--bundle", str(bundle), "--version", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "model written" in printed
    manifest = load_manifest(out / "manifest.json")
    assert manifest.kind == "learned"
    assert manifest.roles == ["vibration", "flow", "pressure"]
    assert all(a.bytes <= 100_000 for a in manifest.artifacts)
    written = json.loads((bundle / "manifest.json").read_text())
    assert written["version"] == 3
    assert written["rules"] == ["rules/learned.yaml"]
    assert "signature" not in written or written["signature"] is None


def test_export_bundles_an_assets_learned_model(tmp_path: Path) -> None:
    state = tmp_path / "state"
    kit.fitted(state / "models" / "sp-1")
    env = tmp_path / "site.env"
    env.write_text(
        f"EDGE_AGENT__STATE_DIR={state}\nEDGE_ASSETS__PROFILES='{json.dumps([kit.PROFILE_JSON])}'\n"
    )
    out = tmp_path / "bundle"
    argv = ["model", "export", "sp-1", "--out", str(out), "--version", "5"]
    assert main([*argv, "--env-file", str(env)]) == 0
    written = json.loads((out / "manifest.json").read_text())
    assert written["version"] == 5
    assert written["model"] == "model/manifest.json"
    assert main(["model", "export", "sp-9", "--out", str(tmp_path / "b2"), "--version", "5",
                 "--env-file", str(env)]) == 1  # fmt: skip


def test_scoring_follows_the_protocol() -> None:
    times = np.arange(10, dtype=np.float64)
    label = np.array([0, 0, 0, 1, 1, 1, 0, 0, 1, 1])
    payloads = [
        {"kind": "raise", "rule_id": "r", "window_ts": 4.0},
        {"kind": "resolved", "rule_id": "r", "window_ts": 6.0},
        {"kind": "raise", "rule_id": "r", "window_ts": 9.0},
    ]
    spans = episodes(payloads)
    assert spans == [(4.0, 6.0), (9.0, math.inf)]
    alarm = alarms(times, spans)
    assert alarm.astype(int).tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 1]  # resolved at 6: not
    c = counts(alarm, label)
    assert c == Counts(tp=3, fp=0, fn=2, tn=5)
    assert c.f1 == pytest.approx(3 / (3 + 1.0))
    assert c.far == 0.0
    assert c.mar == pytest.approx(40.0)
    assert delays(times, alarm, label) == [1.0, 1.0]
