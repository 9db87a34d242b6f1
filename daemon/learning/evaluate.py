"""`edge-agent model eval`: learn from each file's first rows, run the rest as the agent does.

The alarms are scored against the file's labels.

Per CSV file, through the agent's own parts, in event time:
1. the rows go through the profile's transform (the router's) as readings of one asset;
2. the first `train_rows` rows are recorded on the grid by the learner's `Recording`, and
   fitted by the function the fit worker runs (in this process);
3. every later row goes to the learned model's lane (frames, gate, scorer with the asset's
   adapting baseline, advisor with the learned rule pack), as the asset's readings after
   its learning period do;
4. a row alarms when the window ending at it is inside an open recommendation.
Labels are read for scoring only: nothing of them reaches the fit or the lane.

Rows are replayed at the grid time where each first appears (its own time when the rows are
on the grid, as SKAB's are); two rows inside one grid period are one row, as in the frames.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_agent.core.assets import Profile
from edge_agent.core.errors import DataError, EdgeAgentError
from edge_agent.core.readings import Reading
from edge_agent.daemon.flow.lanes import Lane, LaneConfig, build_lane
from edge_agent.daemon.flow.routing import transform_of
from edge_agent.daemon.flow.settings import FrameSettings
from edge_agent.daemon.learning.recorder import Recording
from edge_agent.daemon.learning.scoring import Counts, alarms, counts, delays, episodes
from edge_agent.models.learn.csvdata import CsvFormat
from edge_agent.models.manifest import Manifest
from edge_agent.rules.engine import Recommendation

CHUNK_ROWS = 60  # rows handed to the lane between two steps (the result does not depend on it)


@dataclass(frozen=True)
class EvalSpec:
    """What to evaluate: the profile (its signals' sources are CSV columns) and the labels."""

    profile: Profile
    label: str
    train_rows: int
    label_columns: tuple[str, ...] = ()
    form: CsvFormat = field(default_factory=CsvFormat)
    packs: tuple[Path, ...] = ()


@dataclass
class FileResult:
    """One file's figures."""

    path: Path
    counts: Counts = field(default_factory=Counts)
    delays: list[float] = field(default_factory=list)
    scored_rows: int = 0
    recommendations: int = 0
    first_alarm: dict[str, object] | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None  # why a file holds nothing to score (no label column)


class NoLabelError(DataError):
    """The file has no label column: nothing to score (e.g. a file of normal operation)."""


@dataclass(frozen=True)
class Replay:
    """A file's rows as the agent would receive them: one reading set per row."""

    times: np.ndarray  # [R] grid time of each row
    values: np.ndarray  # [R, S] in the CSV's own units (the profile's sources)
    label: np.ndarray  # [R] 0/1


def read_replay(path: Path, spec: EvalSpec) -> Replay:
    """Read a file's rows, times and labels (DataError naming file, line and column)."""
    from edge_agent.models.learn.csvdata import read_csv  # noqa: PLC0415

    sources = [s.source_name for s in spec.profile.signals]
    table = read_csv(
        path,
        signals=sources,
        label_columns=(spec.label, *spec.label_columns),
        form=replace(spec.form, max_gap_periods=math.inf),
        rate_hz=spec.profile.rate_hz,
    )
    if spec.label not in table.labels:
        raise NoLabelError(f"no label column {spec.label!r}")
    # Each file line once, at the first grid point that holds it.
    _, first = np.unique(table.lines, return_index=True)
    first.sort()
    n = table.rows.shape[0]
    times = (
        table.times[first]
        if table.times is not None
        else np.arange(n, dtype=np.float64)[first] / spec.profile.rate_hz
    )
    return Replay(times, table.rows[first], table.labels[spec.label][first])


def readings(asset: str, profile: Profile, replay: Replay, lo: int, hi: int) -> list[Reading]:
    """Rows lo..hi as readings through the profile's transform (the router's table)."""
    table = transform_of(profile)
    sources = [s.source_name for s in profile.signals]
    out: list[Reading] = []
    for ts, row in zip(replay.times[lo:hi].tolist(), replay.values[lo:hi].tolist(), strict=True):
        for source, value in zip(sources, row, strict=True):
            spec = None if table is None else table.get(source)
            if spec is None:
                out.append(Reading(asset, source, ts, value))
            else:
                name, scale, offset = spec
                out.append(Reading(asset, name, ts, value * scale + offset))
    return out


def learn(
    asset: str, replay: Replay, spec: EvalSpec, out_dir: Path, frames: FrameSettings
) -> tuple[Manifest, list[str]]:
    """Record the first `train_rows` rows as a learning asset does, and fit them."""
    from edge_agent.models.learn.fit import FitOptions  # noqa: PLC0415 - the `learn` extra
    from edge_agent.models.learn.job import Output, fit_rows  # noqa: PLC0415

    profile, n = spec.profile, spec.train_rows
    if not 0 < n < len(replay.times):
        raise DataError(f"--train-rows {n}: the file has {len(replay.times)} rows")
    # The grid rows before row n's own: what a learning period ending at it records.
    need = round((replay.times[n] - replay.times[0]) * profile.rate_hz)
    recording = Recording(profile, max(need, 1), frames)
    recording.ingest(readings(asset, profile, replay, 0, n + 1))
    options = FitOptions(
        units={s.name: s.unit for s in profile.signals},
        tolerance_pct={s.name: s.tolerance_pct for s in profile.signals if s.tolerance_pct},
        rate_hz=profile.rate_hz,
    )
    result = fit_rows(
        recording.rows.astype(np.float64),
        list(profile.signal_names),
        [s.role for s in profile.signals],
        out_dir,
        options,
        output=Output(name=f"learned-{profile.name}", tflite="off"),
        breaks=recording.breaks,
    )
    return result.manifest, list(result.warnings)


def run_lane(lane: Lane, asset: str, spec: EvalSpec, replay: Replay) -> list[Recommendation]:
    """Every row from `train_rows` on through the lane, as the agent's pipeline steps it."""
    recs: list[Recommendation] = []
    for lo in range(spec.train_rows, len(replay.times), CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, len(replay.times))
        lane.frames.ingest(readings(asset, spec.profile, replay, lo, hi))
        recs += lane.step()
    return recs


def _first_alarm(
    recs: Sequence[Recommendation], start: float, profile: Profile
) -> dict[str, object] | None:
    raises = [r for r in recs if r.kind == "raise"]
    inside = [r for r in raises if float(str(r.payload["window_ts"])) >= start] or raises
    if not inside:
        return None
    first = inside[0].payload
    signals = first.get("signals")
    lead = signals[0] if isinstance(signals, list) and signals else {}
    assert isinstance(lead, dict)
    roles = {s.name: s.role for s in profile.signals}
    action = first.get("action")
    return {
        "window_ts": first.get("window_ts"),
        "signal": lead.get("signal"),
        "role": roles.get(str(lead.get("signal"))),
        "direction": lead.get("direction"),
        "title": first.get("title"),
        "advice": action.get("text") if isinstance(action, dict) else None,
    }


def evaluate_file(path: Path, spec: EvalSpec, config: LaneConfig, work: Path) -> FileResult:
    """Learn from the head of one file and score the rest; a refusal is the file's error."""
    result = FileResult(path)
    asset = path.stem
    try:
        replay = read_replay(path, spec)
    except NoLabelError as exc:
        result.skipped = str(exc)
        return result
    except EdgeAgentError as exc:
        result.error = str(exc)
        return result
    try:
        out = Path(tempfile.mkdtemp(prefix=f"{asset}-", dir=work))
        manifest, result.warnings = learn(asset, replay, spec, out, config.frames)
        lane = build_lane(
            f"eval:{path.name}", manifest, config, gateway_id="eval", packs=spec.packs
        )
        recs = run_lane(lane, asset, spec, replay)
    except EdgeAgentError as exc:
        result.error = str(exc)
        return result
    times = replay.times[spec.train_rows :]
    label = replay.label[spec.train_rows :]
    alarm = alarms(times, episodes(r.payload for r in recs))
    result.counts = counts(alarm, label)
    result.delays = delays(times, alarm, label)
    result.scored_rows = len(times)
    result.recommendations = sum(1 for r in recs if r.kind == "raise")
    anomalous = np.flatnonzero(label)
    start = float(times[anomalous[0]]) if anomalous.size else -math.inf
    result.first_alarm = _first_alarm(recs, start, spec.profile)
    return result


def csv_files(data: Path) -> list[Path]:
    """Every CSV under a folder, in a stable order (folders, then numbers in names)."""

    def key(p: Path) -> tuple[str, int, str]:
        stem = p.stem
        return (str(p.parent), int(stem) if stem.isdigit() else -1, stem)

    if data.is_file():
        return [data]
    return sorted((p for p in data.rglob("*.csv") if p.is_file()), key=key)


def evaluate(
    files: Sequence[Path],
    spec: EvalSpec,
    config: LaneConfig,
    progress: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Evaluate every file; models are written to a temporary folder and removed."""
    out: list[FileResult] = []
    with tempfile.TemporaryDirectory(prefix="edge-eval-") as work:
        for path in files:
            result = evaluate_file(path, spec, config, Path(work))
            out.append(result)
            if progress is not None:
                progress(result)
    return out
