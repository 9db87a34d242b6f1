"""Evaluate the model on the held-out scenario set (`make eval`).

    python -m edge_agent.models.training.evaluate [--manifest PATH] [--backend onnx]

Events, not windows, are what a maintenance engineer sees, so the figures are per event:
- An alarm is a run of windows whose score passes the threshold; runs less than
  `MERGE_S` apart are one alarm.
- A fault run is detected when a window ending at or after the onset is anomalous; the
  delay is that window's end minus the onset. Its predicted class is the most probable
  non-normal class, averaged over the first `FIRST_K` anomalous windows; its leading
  signal is the largest mean |contrib| over the same windows.
- An alarm on a normal day, or before a fault's onset, is a false alarm; it also counts as
  a false positive of the class it was given.
Precision, recall and F1 are per fault class; macro F1 averages the six.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_agent.models.base import ModelOutput
from edge_agent.models.training.dataset import cut
from edge_agent.simulator.plant import FAULTS, SIGNALS, Trace
from edge_agent.simulator.scenarios import ABRUPT, Scenario, evaluation_set

MERGE_S = 60.0
FIRST_K = 3
DAY_S = 86_400.0
ScoreFn = Callable[[np.ndarray], ModelOutput]


@dataclass
class Event:
    """The outcome of one fault run."""

    name: str
    kind: str
    signature: str
    detected: bool
    predicted: str  # "normal" when missed
    delay_s: float | None
    top_signal: str | None
    first_top_signal: str | None


@dataclass
class Report:
    """All figures of one evaluation."""

    events: list[Event] = field(default_factory=list)
    false_alarms: int = 0
    false_alarm_classes: list[str] = field(default_factory=list)
    normal_seconds: float = 0.0
    windows: int = 0
    top_class: list[np.ndarray] = field(default_factory=list)  # per-window argmax, for parity
    scores: list[np.ndarray] = field(default_factory=list)  # per-window score, for parity


def alarm_starts(anomalous: np.ndarray, end_s: np.ndarray) -> list[int]:
    """Indices of the windows that open an alarm (runs closer than MERGE_S are merged)."""
    starts: list[int] = []
    last = -np.inf
    for i in np.flatnonzero(anomalous):
        if end_s[i] - last > MERGE_S:
            starts.append(int(i))
        last = float(end_s[i])
    return starts


def _classify(out: ModelOutput, idx: np.ndarray, classes: Sequence[str]) -> str:
    probs = out.probs[idx].mean(axis=0)
    probs[0] = -1.0  # an alarm is never "normal"
    return classes[int(np.argmax(probs))]


def evaluate_trace(
    name: str,
    trace: Trace,
    score: ScoreFn,
    threshold: float,
    window: int,
    hop: int,
    classes: Sequence[str],
    report: Report,
) -> None:
    """Score one trace and add its event, false alarms and normal time to `report`."""
    x, end = cut(trace.values, window, hop)
    out = score(x)
    report.windows += int(x.shape[0])
    report.top_class.append(out.probs.argmax(axis=1))
    report.scores.append(out.score)
    end_s = end.astype(np.float64)
    onset = trace.fault.onset_s if trace.fault is not None else np.inf
    anomalous = out.score > threshold
    before = end_s < onset
    report.normal_seconds += float(min(onset, trace.values.shape[0]))
    for i in alarm_starts(anomalous & before, end_s):
        report.false_alarms += 1
        idx = np.flatnonzero(anomalous & before)
        report.false_alarm_classes.append(_classify(out, idx[idx >= i][:FIRST_K], classes))
    if trace.fault is None or trace.signature is None:
        return
    hits = np.flatnonzero(anomalous & ~before)
    if hits.size == 0:
        event = Event(
            name, trace.fault.kind, trace.signature, detected=False, predicted="normal",
            delay_s=None, top_signal=None, first_top_signal=None,
        )  # fmt: skip
        report.events.append(event)
        return
    first = hits[:FIRST_K]
    mag = np.abs(out.contrib[first]).mean(axis=0)
    report.events.append(
        Event(
            name=name,
            kind=trace.fault.kind,
            signature=trace.signature,
            detected=True,
            predicted=_classify(out, first, classes),
            delay_s=float(end_s[hits[0]] - onset),
            top_signal=SIGNALS[int(np.argmax(mag))],
            first_top_signal=SIGNALS[int(np.argmax(np.abs(out.contrib[hits[0]])))],
        )
    )


class ClassFigures(NamedTuple):
    """Per-class event figures."""

    precision: float
    recall: float
    f1: float
    median_delay_s: float | None
    events: int


def figures(report: Report) -> dict[str, ClassFigures]:
    """Precision, recall, F1 and median delay per fault class."""
    out: dict[str, ClassFigures] = {}
    for kind in FAULTS:
        mine = [e for e in report.events if e.kind == kind]
        tp = sum(e.predicted == kind for e in mine)
        fn = len(mine) - tp
        fp = sum(e.predicted == kind and e.kind != kind for e in report.events)
        fp += report.false_alarm_classes.count(kind)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        delays = [e.delay_s for e in mine if e.delay_s is not None]
        median = float(np.median(delays)) if delays else None
        out[kind] = ClassFigures(precision, recall, f1, median, len(mine))
    return out


def macro_f1(report: Report) -> float:
    """Mean F1 over the fault classes."""
    return float(np.mean([f.f1 for f in figures(report).values()]))


def false_alarms_per_day(report: Report) -> float:
    """False alarms per asset-day of normal operation."""
    return report.false_alarms / max(report.normal_seconds / DAY_S, 1e-9)


def signature_misses(report: Report) -> list[Event]:
    """Detected events whose leading signal is not the fault's signature signal."""
    return [e for e in report.events if e.detected and e.top_signal != e.signature]


def run(
    score: ScoreFn,
    threshold: float,
    window: int,
    hop: int,
    classes: Sequence[str],
    normal: Sequence[Scenario],
    faults: Sequence[Scenario],
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Evaluate `score` on the given normal and fault scenarios."""
    report = Report()
    todo = list(normal) + list(faults)
    for i, sc in enumerate(todo):
        evaluate_trace(sc.name, sc.run(), score, threshold, window, hop, classes, report)
        if progress is not None and ((i + 1) % 10 == 0 or i + 1 == len(todo)):
            progress(f"evaluated {i + 1}/{len(todo)} scenarios")
    return report


def table(report: Report) -> str:
    """The evaluation table in Markdown."""
    figs = figures(report)
    lines = [
        "| class | events | precision | recall | F1 | median delay (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, f in figs.items():
        delay = "-" if f.median_delay_s is None else f"{f.median_delay_s:.0f}"
        mark = " (abrupt)" if kind in ABRUPT else ""
        lines.append(
            f"| {kind}{mark} | {f.events} | {f.precision:.3f} | {f.recall:.3f} | {f.f1:.3f} "
            f"| {delay} |"
        )
    abrupt = [e.delay_s for e in report.events if e.kind in ABRUPT and e.delay_s is not None]
    all_delays = [e.delay_s for e in report.events if e.delay_s is not None]
    lines.append(
        f"| **overall (macro)** | {len(report.events)} "
        f"| {np.mean([f.precision for f in figs.values()]):.3f} "
        f"| {np.mean([f.recall for f in figs.values()]):.3f} | {macro_f1(report):.3f} "
        f"| {np.median(all_delays) if all_delays else float('nan'):.0f} |"
    )
    days = report.normal_seconds / DAY_S
    agree = len([e for e in report.events if e.detected]) - len(signature_misses(report))
    detected = max(1, len([e for e in report.events if e.detected]))
    lines += [
        "",
        (
            f"- false alarms: {report.false_alarms} in {days:.1f} asset-days of normal operation "
            f"= {false_alarms_per_day(report):.2f} per asset-day"
        ),
        (
            f"- median delay of abrupt faults ({', '.join(sorted(ABRUPT))}): "
            f"{np.median(abrupt) if abrupt else float('nan'):.0f} s"
        ),
        (
            f"- leading signal = signature signal in {agree}/{detected} detected events "
            f"({100 * agree / detected:.1f}%)"
        ),
        f"- windows scored: {report.windows}",
    ]
    return "\n".join(lines)


def _progress(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: evaluate a model artifact on the held-out scenario set."""
    from edge_agent.models.manifest import load_manifest  # noqa: PLC0415 - keep import light
    from edge_agent.models.scorer import Scorer  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="Evaluate the model on held-out scenarios.")
    parser.add_argument("--manifest", type=Path, default=None, help="manifest.json to evaluate")
    parser.add_argument("--backend", default="onnx", help="backend: onnx or litert")
    parser.add_argument("--precision", default="fp32", help="fp32 or int8")
    args = parser.parse_args(argv)
    manifest = load_manifest(args.manifest)
    scorer = Scorer(
        manifest,
        backends=(args.backend,),
        onnx_providers=("CPUExecutionProvider",),
        precision=args.precision,
    )
    normal, faults = evaluation_set()
    say = sys.stdout.write  # a command line's output, not a log
    say(f"{manifest.name} {manifest.version} on {scorer.backend_name} ({args.precision})\n")
    report = run(
        scorer.score,
        scorer.threshold,
        manifest.window,
        manifest.hop,
        manifest.classes,
        normal,
        faults,
        progress=_progress,
    )
    say(table(report) + "\n")
    for e in signature_misses(report):
        say(f"- leading signal miss: {e.name}: {e.top_signal} instead of {e.signature}\n")
    for e in report.events:
        if e.predicted != e.kind:
            say(f"- misclassified: {e.name} as {e.predicted}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
