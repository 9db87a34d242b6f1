"""CSV files of normal operation: formats detected, grid, and every refusal named by place."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.errors import ConfigError, DataError, EdgeAgentError
from edge_agent.models.learn.csvdata import CsvFormat, read_csv

HEADER = ["datetime", "vib", "current", "anomaly"]


def _rows(n: int, start: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(1)
    return [
        [
            f"2024-05-01 10:{(start + i) // 60:02d}:{(start + i) % 60:02d}",
            f"{0.2 + 0.01 * rng.standard_normal():.5f}",
            f"{10 + 0.1 * rng.standard_normal():.4f}",
            "0",
        ]
        for i in range(n)
    ]


def _write(path: Path, rows: list[list[str]], header: list[str] = HEADER, sep: str = ";") -> Path:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("sep", [";", ",", "\t"])
def test_the_delimiter_and_the_iso_time_are_detected(tmp_path: Path, sep: str) -> None:
    table = read_csv(_write(tmp_path / "a.csv", _rows(30), sep=sep), label_columns=["anomaly"])
    assert table.delimiter == sep
    assert table.time_column == "datetime"
    assert table.signals == ("vib", "current")  # the label column is not a signal
    assert table.rows.shape == (30, 2)
    assert set(table.labels) == {"anomaly"}
    assert table.times is not None
    np.testing.assert_allclose(np.diff(table.times), 1.0)
    assert table.where(0) == f"{tmp_path / 'a.csv'} line 2"


def test_signals_are_chosen_by_name_in_the_callers_order(tmp_path: Path) -> None:
    table = read_csv(_write(tmp_path / "a.csv", _rows(20)), signals=["current", "vib"])
    assert table.signals == ("current", "vib")
    assert 9 < table.rows[:, 0].mean() < 11


@pytest.mark.parametrize(
    ("column", "cell", "fmt"),
    [
        ("timestamp", "2024-05-01T10:00:{s:02d}.250", "iso"),
        ("ts", "{e}", "epoch_s"),
        ("time", "{ms}", "epoch_ms"),
    ],
)
def test_time_formats_are_detected(tmp_path: Path, column: str, cell: str, fmt: str) -> None:
    base = 1_714_557_600
    rows = [
        [cell.format(s=i, e=base + i, ms=(base + i) * 1000), f"{i % 7}.5", f"{i % 3}"]
        for i in range(40)
    ]
    table = read_csv(_write(tmp_path / "t.csv", rows, [column, "a", "b"], sep=","))
    assert table.time_column == column, fmt
    assert table.times is not None
    np.testing.assert_allclose(np.diff(table.times), 1.0)
    assert table.rows.shape == (40, 2)


def test_a_given_strptime_format(tmp_path: Path) -> None:
    rows = [[f"01.05.2024 10:00:{i:02d}", f"{i}"] for i in range(10)]
    path = _write(tmp_path / "d.csv", rows, ["when", "x"])
    table = read_csv(path, form=CsvFormat(time_column="when", time_format="%d.%m.%Y %H:%M:%S"))
    assert table.rows[:, 0].tolist() == list(range(10))
    with pytest.raises(ConfigError, match=r"time format 'dd\.mm'"):
        read_csv(path, form=CsvFormat(time_column="when", time_format="dd.mm"))


def test_rows_go_onto_the_grid_holding_the_last_value(tmp_path: Path) -> None:
    # 2 s between two rows (as in SKAB): the missing second holds the previous reading.
    rows = [
        ["2024-05-01 10:00:00", "1"],
        ["2024-05-01 10:00:01", "2"],
        ["2024-05-01 10:00:03", "3"],
    ]
    table = read_csv(_write(tmp_path / "g.csv", rows, ["time", "x"]))
    assert table.rows[:, 0].tolist() == [1, 2, 2, 3]
    assert table.lines.tolist() == [2, 3, 3, 4]


def test_no_time_column_takes_each_row_as_one_period(tmp_path: Path) -> None:
    table = read_csv(_write(tmp_path / "n.csv", [["1", "2"], ["3", "4"]], ["a", "b"]))
    assert table.time_column is None
    assert table.times is None
    assert table.rows.tolist() == [[1, 2], [3, 4]]


def test_max_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.csv", _rows(50))
    assert read_csv(path, label_columns=["anomaly"], max_rows=12).rows.shape == (12, 2)


def test_a_decimal_comma(tmp_path: Path) -> None:
    rows = [[f"2024-05-01 10:00:{i:02d}", f"{i},5"] for i in range(5)]
    path = _write(tmp_path / "c.csv", rows, ["time", "x"])
    assert read_csv(path, form=CsvFormat(decimal=",")).rows[:, 0].tolist() == [
        0.5,
        1.5,
        2.5,
        3.5,
        4.5,
    ]
    with pytest.raises(DataError, match=re.escape("'0,5' is not a number (a decimal comma?")):
        read_csv(path)


def _refusal(tmp_path: Path, line: int, col: int, cell: str) -> str:
    rows = _rows(30)
    rows[line - 2][col - 1] = cell
    path = _write(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as err:
        read_csv(path, label_columns=["anomaly"])
    assert isinstance(err.value, EdgeAgentError)
    return str(err.value)


@pytest.mark.parametrize(
    ("cell", "says"),
    [
        ("", "empty cell"),
        ("abc", "'abc' is not a number"),
        ("nan", "'nan' is not a reading"),
        ("-inf", "'-inf' is not a reading"),
    ],
)
def test_a_bad_cell_names_file_line_and_column(tmp_path: Path, cell: str, says: str) -> None:
    msg = _refusal(tmp_path, 17, 3, cell)
    assert msg.startswith(f"{tmp_path / 'bad.csv'} line 17, column 3 'current': {says}"), msg


def test_a_bad_label_cell_is_refused_too(tmp_path: Path) -> None:
    assert "line 9, column 4 'anomaly': 'x' is not a number" in _refusal(tmp_path, 9, 4, "x")


def test_a_bad_time_names_file_line_and_column(tmp_path: Path) -> None:
    msg = _refusal(tmp_path, 12, 1, "yesterday")
    assert "bad.csv line 12, column 1 'datetime': 'yesterday' is not a time" in msg


def test_a_missing_signal_names_the_column_and_lists_those_there(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.csv", _rows(10))
    with pytest.raises(DataError) as err:
        read_csv(path, signals=["vib", "pressure"])
    assert str(err.value) == (
        f"{path} line 1: no column 'pressure' for signal 'pressure'; the columns are: "
        "datetime, vib, current, anomaly"
    )


def test_a_row_with_too_few_fields(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[4] = rows[4][:2]
    with pytest.raises(DataError, match=r"a\.csv line 6: 2 fields, the header has 4"):
        read_csv(_write(tmp_path / "a.csv", rows))


def test_a_gap_in_time_is_refused(tmp_path: Path) -> None:
    rows = _rows(10) + _rows(10, start=13)  # 3 s between lines 11 and 12: more than 2 periods
    with pytest.raises(DataError) as err:
        read_csv(_write(tmp_path / "gap.csv", rows), label_columns=["anomaly"])
    assert "gap.csv line 12: 4 s after line 11, a gap of more than 2 periods" in str(err.value)
    # ... unless the caller allows a longer one
    table = read_csv(
        tmp_path / "gap.csv", label_columns=["anomaly"], form=CsvFormat(max_gap_periods=5)
    )
    assert table.rows.shape[0] == 23


def test_time_going_backwards_is_refused(tmp_path: Path) -> None:
    rows = _rows(10)
    rows[6][0], rows[7][0] = rows[7][0], rows[6][0]
    with pytest.raises(DataError, match=r"back\.csv line 9: time goes backwards"):
        read_csv(_write(tmp_path / "back.csv", rows), label_columns=["anomaly"])


def test_a_file_without_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data rows"):
        read_csv(_write(tmp_path / "e.csv", []))
