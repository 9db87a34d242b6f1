"""What `model fit` and `model eval` print: a fit's per-signal table, the eval's rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.daemon.learning.scoring import Counts, median_delay

if TYPE_CHECKING:
    from edge_agent.daemon.learning.evaluate import FileResult
    from edge_agent.models.learn.fit import Fitted

_ROW = "{:<16} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7}  {}"


def fit_table(fitted: Fitted) -> str:
    """Per signal: role, baseline, spread, floor, threshold and what set the spread."""
    head = f"{'signal':<24} {'role':<12} {'baseline':>11} {'spread':>10} {'floor':>10} "
    lines = [head + f"{'t':>6} {'alarm at':>10}  set by"]
    for s in fitted.per_signal:
        q = ", quantised" if s.quantised else ""
        lines.append(
            f"{s.name[:24]:<24} {s.role:<12} {s.mean:>11.5g} {s.spread:>10.4g} {s.floor:>10.4g} "
            f"{s.t:>6.2f} {s.std:>10.4g}  {s.limited_by}{q}"
        )
    lines.append(f"{fitted.rows} rows, {fitted.windows} windows of {fitted.window}")
    return "\n".join(lines)


def _name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name


def _delay(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _lead(r: FileResult) -> str:
    first = r.first_alarm
    if not first:
        return ""
    return f"{first['signal']} ({first['role']}, {first['direction']}): {first['title']}"


def eval_header() -> str:
    """The table's head."""
    return _ROW.format(
        "file", "rows", "TP", "FP", "FN", "TN", "F1", "FAR%", "MAR%", "delay_s", "first alarm: lead"
    )


def eval_row(r: FileResult, root: Path) -> str:
    """One file's line (or its error)."""
    name = _name(r.path, root)
    if r.error is not None:
        return f"{name:<16} error: {r.error}"
    if r.skipped is not None:
        return f"{name:<16} not scored: {r.skipped}"
    return _line(name, r.scored_rows, r.counts, median_delay(r.delays), _lead(r))


def _line(name: str, rows: int, c: Counts, delay: float | None, tail: str) -> str:
    f1, far, mar = f"{c.f1:.3f}", f"{c.far:.1f}", f"{c.mar:.1f}"
    return _ROW.format(name, rows, c.tp, c.fp, c.fn, c.tn, f1, far, mar, _delay(delay), tail)


def total(results: Sequence[FileResult]) -> Counts:
    """Counts summed over the files that ran."""
    return reduce(lambda a, b: a + b, (r.counts for r in _scored(results)), Counts())


def _scored(results: Sequence[FileResult]) -> list[FileResult]:
    return [r for r in results if r.error is None and r.skipped is None]


def eval_footer(results: Sequence[FileResult]) -> str:
    """The summed line, the anomalies found and the files that failed."""
    c = total(results)
    delays = [d for r in _scored(results) for d in r.delays]
    found = sum(1 for d in delays if not math.isnan(d))  # NaN: missed
    failed = [r for r in results if r.error is not None]
    skipped = [r for r in results if r.skipped is not None]
    rows = sum(r.scored_rows for r in results)
    lines = [
        _line("ALL", rows, c, median_delay(delays), f"{found} of {len(delays)} anomalies alarmed"),
        f"F1 {c.f1:.3f}  FAR {c.far:.2f} %  MAR {c.mar:.2f} %  over {len(_scored(results))} files"
        + (f"; {len(failed)} failed" if failed else "")
        + (f"; {len(skipped)} not scored" if skipped else ""),
    ]
    return "\n".join(lines)


def eval_json(results: Sequence[FileResult], root: Path) -> dict[str, object]:
    """The same figures as JSON: f1, far, mar (percent) at the top, and per file."""
    c = total(results)
    delays = [d for r in _scored(results) for d in r.delays]
    return {
        "f1": round(c.f1, 4),
        "far": round(c.far, 3),
        "mar": round(c.mar, 3),
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
        "median_delay_s": median_delay(delays),
        "files": [
            {
                "file": _name(r.path, root),
                "error": r.error,
                "skipped": r.skipped,
                "rows": r.scored_rows,
                "tp": r.counts.tp,
                "fp": r.counts.fp,
                "fn": r.counts.fn,
                "tn": r.counts.tn,
                "f1": round(r.counts.f1, 4),
                "far": round(r.counts.far, 3),
                "mar": round(r.counts.mar, 3),
                "median_delay_s": median_delay(r.delays),
                "anomalies": len(r.delays),
                "first_alarm": r.first_alarm,
                "warnings": r.warnings,
            }
            for r in results
        ],
    }
