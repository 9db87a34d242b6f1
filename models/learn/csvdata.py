"""CSV files of normal operation, read onto a fixed-rate grid for a fit.

Rules kept: the first line is the header; the delimiter is `;`, `,` or tab, detected from
the header and the first rows unless given; the time column is found by its name or by
its first cell's format (ISO `YYYY-MM-DD hh:mm:ss` with optional fraction, `T` or offset;
epoch seconds or milliseconds by name) unless given; label columns the caller names are
never signals; every other column is a signal unless the caller chooses them. Rows are put
on a grid at `rate_hz` from the first time, each grid point holding the last reading at or
before it (as the agent's frames do). Anything that cannot make a model is a DataError
naming file, line and column: a missing column, an empty or non-numeric cell, NaN or
infinity, time going backwards, or a gap of more than `max_gap_periods` periods.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge_agent.core.errors import ConfigError, DataError

DELIMITERS = (";", ",", "\t")
TIME_NAMES = frozenset(
    {"datetime", "date_time", "timestamp", "time_stamp", "time", "date", "ts", "epoch"}
)
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms")  # or a strptime pattern holding `%`
EPOCH_MS_ABOVE = 1e11  # epoch seconds reach 1e11 in the year 5138; milliseconds in 1973
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")


@dataclass(frozen=True)
class CsvFormat:
    """How a file is written; None means detected."""

    delimiter: str | None = None
    time_column: str | None = None
    time_format: str | None = None  # iso, epoch_s, epoch_ms or a strptime pattern
    decimal: str = "."
    max_gap_periods: float = 2.0  # a longer gap between rows is refused


@dataclass(frozen=True)
class Table:
    """One file's readings on the grid: rows [T, S] float64 and where each came from."""

    path: Path
    signals: tuple[str, ...]
    rows: np.ndarray  # [T, S] float64
    lines: np.ndarray  # [T] the file line each grid row's readings come from
    times: np.ndarray | None  # [T] grid times, epoch seconds; None without a time column
    time_column: str | None
    delimiter: str
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # label columns found

    def where(self, i: int) -> str:
        """Name grid row i as its file and line."""
        return f"{self.path} line {int(self.lines[i])}"


def _delimiter(lines: list[tuple[int, str]]) -> str:
    header, sample = lines[0][1], [text for _, text in lines[1:6]]
    best, fields = "", 1
    for cand in DELIMITERS:
        n = len(next(csv.reader([header], delimiter=cand)))
        if n > fields and all(len(next(csv.reader([s], delimiter=cand))) == n for s in sample):
            best, fields = cand, n
    if not best:
        # One column, or rows that no delimiter splits like the header: the header decides.
        counts = {c: header.count(c) for c in DELIMITERS}
        best = max(counts, key=lambda c: counts[c]) if any(counts.values()) else ","
    return best


def _parse_time(text: str, fmt: str) -> float:
    if fmt == "epoch_s":
        return float(text)
    if fmt == "epoch_ms":
        return float(text) / 1000.0
    when = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)  # noqa: DTZ007 - naive is taken as UTC below
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # only differences matter; naive is taken as UTC
    return when.timestamp()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _time_column(header: list[str], first: list[str], given: str | None) -> int | None:
    if given is not None:
        return header.index(given) if given in header else -1
    for k, name in enumerate(header):
        if name.strip().lower() in TIME_NAMES:
            return k
    for k, cell in enumerate(first):
        if not _is_number(cell):
            try:
                datetime.fromisoformat(cell.strip())
            except ValueError:
                continue
            return k
    return None


def _time_format(cell: str, given: str | None) -> str:
    if given is not None:
        if given not in TIME_FORMATS and "%" not in given:
            raise ConfigError(
                f"time format {given!r}: use one of {', '.join(TIME_FORMATS)} or a strptime "
                "pattern such as '%d.%m.%Y %H:%M:%S'"
            )
        return given
    if _is_number(cell):
        return "epoch_ms" if abs(float(cell)) > EPOCH_MS_ABOVE else "epoch_s"
    return "iso"


def _column(path: Path, parsed: list[tuple[int, list[str]]], col: int, decimal: str) -> np.ndarray:
    """Column `col` of the data rows as float64; DataError naming the first bad cell."""
    cells = [cells[col] for _, cells in parsed[1:]]
    if decimal != ".":
        cells = [c.replace(decimal, ".") for c in cells]
    try:
        values = np.asarray(cells, dtype=np.float64)
    except ValueError:
        values = np.full(len(cells), np.nan)
    if not np.isfinite(values).all():
        name = parsed[0][1][col]
        for (n, row), text in zip(parsed[1:], cells, strict=True):
            _cell(f"{path} line {n}, column {col + 1} {name!r}", row[col], text)
    return values


def _cell(where: str, raw: str, text: str) -> float:
    """One cell as a reading (`text` with the decimal mark made a point), else DataError."""
    if not raw:
        raise DataError(f"{where}: empty cell; every signal needs a reading in every row")
    try:
        value = float(text)
    except ValueError:
        hint = " (a decimal comma? pass decimal=',')" if _DECIMAL_COMMA.match(raw) else ""
        raise DataError(f"{where}: {raw!r} is not a number{hint}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {raw!r} is not a reading")
    return value


def _read_lines(path: Path, max_rows: int | None) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    lines = [(n, s) for n, s in enumerate(text.splitlines(), 1) if s.strip()]
    if len(lines) < 2:
        raise DataError(f"{path}: no data rows (a header line and at least one row are needed)")
    return lines if max_rows is None else lines[: max_rows + 1]


def _columns(
    path: Path,
    header: list[str],
    first: list[str],
    signals: Sequence[str] | None,
    label_columns: Sequence[str],
    time_column: str | None,
) -> tuple[int | None, list[int], list[int]]:
    """Indices of the time column, the signals and the label columns found."""
    t_col = _time_column(header, first, time_column)
    if t_col == -1:
        raise DataError(
            f"{path} line 1: no time column {time_column!r}; the columns are: {', '.join(header)}"
        )
    labels = [k for k, name in enumerate(header) if name in label_columns]
    if signals is None:
        return t_col, [k for k in range(len(header)) if k != t_col and k not in labels], labels
    missing = [s for s in signals if s not in header]
    if missing:
        raise DataError(
            f"{path} line 1: no column {missing[0]!r} for signal {missing[0]!r}; the columns "
            f"are: {', '.join(header)}"
        )
    return t_col, [header.index(s) for s in signals], labels


def read_csv(
    path: Path | str,
    *,
    signals: Sequence[str] | None = None,
    label_columns: Sequence[str] = (),
    form: CsvFormat | None = None,
    rate_hz: float = 1.0,
    max_rows: int | None = None,
) -> Table:
    """Read one CSV file onto the grid; `max_rows` reads only the first data rows."""
    path = Path(path)
    form = form or CsvFormat()
    decimal = form.decimal
    lines = _read_lines(path, max_rows)
    sep = form.delimiter or _delimiter(lines)
    parsed = [
        (n, [c.strip() for c in cells])
        for n, cells in zip(
            (n for n, _ in lines), csv.reader([s for _, s in lines], delimiter=sep), strict=True
        )
    ]
    header = parsed[0][1]
    t_col, sig_cols, label_cols = _columns(
        path, header, parsed[1][1], signals, label_columns, form.time_column
    )
    if t_col is not None and t_col in sig_cols:
        raise DataError(f"{path} line 1: column {header[t_col]!r} is the time, not a signal")
    time_fmt = None if t_col is None else _time_format(parsed[1][1][t_col], form.time_format)
    for n, cells in parsed[1:]:
        if len(cells) != len(header):
            raise DataError(f"{path} line {n}: {len(cells)} fields, the header has {len(header)}")
    values = np.empty((len(parsed) - 1, len(sig_cols)))
    for j, k in enumerate(sig_cols):
        values[:, j] = _column(path, parsed, k, decimal)
    label_values = np.empty((len(parsed) - 1, len(label_cols)))
    for j, k in enumerate(label_cols):
        label_values[:, j] = _column(path, parsed, k, decimal)
    line_no = np.array([n for n, _ in parsed[1:]])
    names = tuple(header[k] for k in sig_cols)
    if t_col is None or time_fmt is None:
        labels = _labels(header, label_cols, label_values)
        return Table(path, names, values, line_no, None, None, sep, labels)
    times = _times(path, parsed, t_col, time_fmt)
    idx = _grid(path, times, line_no, rate_hz, form.max_gap_periods)
    return Table(
        path,
        names,
        values[idx],
        line_no[idx],
        times[0] + np.arange(len(idx)) / rate_hz,
        header[t_col],
        sep,
        _labels(header, label_cols, label_values[idx]),
    )


def _times(path: Path, parsed: list[tuple[int, list[str]]], col: int, fmt: str) -> np.ndarray:
    """The time column in epoch seconds; DataError naming the first cell not in `fmt`."""
    out = np.empty(len(parsed) - 1)
    for i, (n, cells) in enumerate(parsed[1:]):
        try:
            out[i] = _parse_time(cells[col], fmt)
        except ValueError:
            raise DataError(
                f"{path} line {n}, column {col + 1} {parsed[0][1][col]!r}: {cells[col]!r} is "
                f"not a time in the format {fmt!r} (give the time format)"
            ) from None
        if not math.isfinite(out[i]):
            raise DataError(f"{path} line {n}, column {col + 1}: {cells[col]!r} is not a time")
    return out


def _labels(header: list[str], cols: list[int], values: np.ndarray) -> dict[str, np.ndarray]:
    return {header[k]: values[:, j] for j, k in enumerate(cols)}


def _grid(
    path: Path, times: np.ndarray, lines: np.ndarray, rate_hz: float, max_gap_periods: float
) -> np.ndarray:
    """Index of the reading each grid point holds; refuses time going back and gaps."""
    step = np.diff(times)
    back = np.flatnonzero(step < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(
            f"{path} line {lines[i]}: time goes backwards ({step[i - 1]:g} s after line "
            f"{lines[i - 1]}); sort the rows by time"
        )
    limit = max_gap_periods / rate_hz
    gap = np.flatnonzero(step > limit * (1 + 1e-9))
    if gap.size:
        i = int(gap[0]) + 1
        raise DataError(
            f"{path} line {lines[i]}: {step[i - 1]:g} s after line {lines[i - 1]}, a gap of "
            f"more than {max_gap_periods:g} periods ({limit:g} s at {rate_hz:g} Hz); split the "
            "file at the gap, or fit on the rows before it"
        )
    n = math.floor((times[-1] - times[0]) * rate_hz + 1e-9) + 1
    grid = times[0] + np.arange(n) / rate_hz
    idx: np.ndarray = np.searchsorted(times, grid + 1e-9 / rate_hz, side="right") - 1
    return idx
