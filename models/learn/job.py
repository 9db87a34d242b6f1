"""One fitting job, from CSV files or rows to a model directory (`model fit`, the worker).

Progress is reported as (fraction of the whole job, stage): reading takes the first tenth,
the fit up to 0.7, writing the files the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.core.errors import DataError
from edge_agent.models.learn import export
from edge_agent.models.learn.csvdata import CsvFormat, Table, read_csv
from edge_agent.models.learn.fit import FitOptions, Fitted, Progress, Where, fit
from edge_agent.models.manifest import MANIFEST_FILE, Manifest


@dataclass(frozen=True)
class Result:
    """A written model: its verified manifest, the fit behind it, and what to warn about."""

    manifest: Manifest
    fitted: Fitted
    warnings: tuple[str, ...]

    @property
    def manifest_path(self) -> Path:
        """Where `manifest.json` was written."""
        return self.manifest.directory / MANIFEST_FILE


@dataclass(frozen=True)
class Output:
    """What to write: the model's name and whether to add TFLite files."""

    name: str = "learned"
    tflite: export.TfLite = "auto"


def _part(progress: Progress | None, lo: float, hi: float) -> Progress:
    """A progress callback mapping a stage's own 0..1 onto lo..hi of the job."""

    def say(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(lo + (hi - lo) * fraction, stage)

    return say


def fit_rows(  # noqa: PLR0913 - rows, what they are, where to write; the rest keyword-only
    rows: np.ndarray,
    signals: Sequence[str],
    roles: Sequence[str],
    out_dir: Path | str,
    options: FitOptions | None = None,
    *,
    output: Output | None = None,
    breaks: Sequence[int] = (),
    where: Where | None = None,
    progress: Progress | None = None,
    notes: Sequence[str] = (),
) -> Result:
    """Fit rows [T, S] and write the model into `out_dir`; `notes` lead the warnings."""
    out = output or Output()
    fitted = fit(
        rows,
        signals,
        roles,
        options,
        breaks=breaks,
        where=where,
        progress=_part(progress, 0.1, 0.7),
    )
    manifest = export.write(
        fitted, out_dir, name=out.name, tflite=out.tflite, progress=_part(progress, 0.7, 1.0)
    )
    return Result(manifest, fitted, (*notes, *fitted.warnings))


def _locator(tables: Sequence[Table], starts: Sequence[int]) -> Where:
    def where(i: int) -> str:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return tables[k].where(i - starts[k])

    return where


def fit_csv(  # noqa: PLR0913 - the choices of `edge-agent model fit`, each with a default
    files: Sequence[Path | str],
    *,
    roles: Mapping[str, str],
    out_dir: Path | str,
    signals: Sequence[str] | None = None,
    label_columns: Sequence[str] = (),
    options: FitOptions | None = None,
    form: CsvFormat | None = None,
    max_rows: int | None = None,
    output: Output | None = None,
    progress: Progress | None = None,
) -> Result:
    """Fit CSV files of normal operation (one piece each; windows never cross files).

    `roles` maps a signal to its role; a signal without one is fitted as `other`, with a
    warning. `signals` defaults to every column of the first file but its time and labels.
    `max_rows` takes only the first data rows of each file. Files are read at
    `options.rate_hz`.
    """
    if not files:
        raise DataError("no CSV files given")
    opt = options or FitOptions()
    say = _part(progress, 0.0, 0.1)
    tables: list[Table] = []
    for k, path in enumerate(files):
        say(k / len(files), f"reading {path}")
        chosen = signals if signals is not None or not tables else tables[0].signals
        tables.append(
            read_csv(
                path,
                signals=chosen,
                label_columns=label_columns,
                form=form,
                rate_hz=opt.rate_hz,
                max_rows=max_rows,
            )
        )
    names = tables[0].signals
    notes = [
        f"{t.path} has no time column: each row is taken as one period ({1 / opt.rate_hz:g} s)"
        for t in tables
        if t.time_column is None
    ]
    notes += [f"signal {s!r} has no role: fitted as 'other'" for s in names if s not in roles]
    starts = np.cumsum([0, *(t.rows.shape[0] for t in tables)])
    return fit_rows(
        np.vstack([t.rows for t in tables]),
        names,
        [roles.get(s, "other") for s in names],
        out_dir,
        opt,
        output=output,
        breaks=[int(v) for v in starts[1:-1]],
        where=_locator(tables, [int(v) for v in starts[:-1]]),
        progress=progress,
        notes=notes,
    )
