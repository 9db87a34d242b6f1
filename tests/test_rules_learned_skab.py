"""Issue 12, acceptance 5: on SKAB files whose cause the dataset names, what the advice says.

Per file, as the benchmark's protocol has it: a learned model is fitted on the first 400 rows
(models/learn, numpy), every later row ends a window of 15 rows that the model's maths
scores (contribution per signal against the asset's baseline, which follows a healthy pump
as the design has it: EWMA 0.002 per window while nothing is open and the score is under 0.8
of the threshold), and the learned pack advises on the windows. For the first alarm of the
labelled anomaly the test reports the leading signal, its role and direction and the rule
that spoke, and checks that the advice names a mechanism plausible for the cause the
dataset's README gives, or says it does not know. Skips, saying why, without the dataset or
models/learn.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules.engine import Advisor, load_pack
from edge_agent.rules.pack import default_pack_path

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab-dev"
TRAIN_ROWS = 400
# The test bed's eight sensors as a profile would state them (README of the dataset).
PROFILE = {
    "Accelerometer1RMS": ("vibration", "g"),
    "Accelerometer2RMS": ("vibration", "g"),
    "Current": ("current", "A"),
    "Pressure": ("pressure", "bar"),
    "Temperature": ("temperature", "degC"),
    "Thermocouple": ("temperature", "degC"),
    "Voltage": ("voltage", "V"),
    "Volume Flow RateRMS": ("flow", "l/min"),
}
LABELS = ("anomaly", "changepoint")
# Cause named by the dataset -> the rules whose advice is plausible for it. `abnormal` (the
# pack says it does not know) is always acceptable; a wrong mechanism or "suspect the
# sensor" for a real process fault is not.
PLAUSIBLE = {
    "inlet valve closure": {"restricted-suction", "flow-low", "loss-of-fluid"},
    "leak": {"loss-of-fluid", "flow-low", "restricted-suction"},
    "rotor imbalance": {"mechanical"},
    "water increase": {"flow-high"},
    "cavitation": {"restricted-suction", "loss-of-fluid"},
}
CAUSES = {f"valve1/{i}.csv": "inlet valve closure" for i in range(16)}
CAUSES |= {"other/1.csv": "leak", "other/3.csv": "leak", "other/11.csv": "water increase"}
CAUSES |= {f"other/{i}.csv": "rotor imbalance" for i in (5, 7, 9)}
CAUSES |= {"other/13.csv": "cavitation"}

pytestmark = [
    pytest.mark.skipif(not DATA.is_dir(), reason=f"the SKAB subset is not at {DATA}"),
    pytest.mark.skipif(
        importlib.util.find_spec("edge_agent.models.learn.fit") is None,
        reason="models/learn (the fit of learned models) is not in this tree",
    ),
]


@dataclass(frozen=True)
class FirstAlarm:
    """The first alarm of a file's labelled anomaly, as the advice gave it."""

    row: int
    rule: str
    lead: str
    role: str
    direction: str
    change_pct: float | None
    title: str


def read(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """SKAB's `;` file: signal names, rows [T, S], the anomaly label [T]."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    header = rows[0][1:]
    values = np.array([r[1:] for r in rows[1:]], dtype=np.float64)
    signals = [h for h in header if h not in LABELS]
    cols = [header.index(s) for s in signals]
    return signals, values[:, cols], values[:, header.index("anomaly")].astype(int)


def replay(name: str) -> tuple[FirstAlarm | None, list[str]]:
    """Fit on the first rows, advise on the rest; the anomaly's first alarm and every raise."""
    from edge_agent.models.learn import fit as learn  # noqa: PLC0415 - skipped without it

    signals, rows, label = read(DATA / name)
    roles = [PROFILE[s][0] for s in signals]
    options = learn.FitOptions(units={s: PROFILE[s][1] for s in signals})
    fitted = learn.fit(rows[:TRAIN_ROWS], signals, roles, options)
    advisor = Advisor(
        load_pack([default_pack_path("learned")]),
        model_name="skab",
        model_version="1",
        signals=signals,
        classes=["normal", "unknown"],
        gateway_id="test",
        roles=roles,
    )
    w, baseline, std = fitted.window, fitted.mean.copy(), fitted.std
    anomaly = np.flatnonzero(label)
    start, end = int(anomaly[0]), int(anomaly[-1])
    is_open, first, raised = False, None, []
    for t in range(TRAIN_ROWS, len(rows)):
        mean = rows[t - w + 1 : t + 1].mean(axis=0)
        contrib = (mean - baseline) / std
        score = float(np.abs(contrib).max())
        stats = {
            s: SignalStats(m, m, m, m, 0.0, b, (m - b) / abs(b) * 100.0 if b else 0.0)
            for s, m, b in zip(signals, mean.tolist(), baseline.tolist(), strict=True)
        }
        probs = {"unknown": min(1.0, score), "normal": 1.0 - min(1.0, score)}
        c = dict(zip(signals, contrib.tolist(), strict=True))
        result = WindowResult("pump", float(t), score, 1.0, c, probs, stats)
        was_open = is_open
        for rec in advisor.evaluate([result]):
            assert rec.kind != "needs_review", rec.payload
            is_open = rec.kind == "raise"
            if rec.kind != "raise":
                continue
            raised.append(str(rec.payload["rule_id"]))
            # The first alarm of the anomaly: raised inside it, or before it and still open.
            if first is None and t <= end:
                lead = max(c, key=lambda s: abs(c[s]))
                first = FirstAlarm(
                    t,
                    str(rec.payload["rule_id"]),
                    lead,
                    roles[signals.index(lead)],
                    "up" if c[lead] >= 0 else "down",
                    stats[lead].change_pct,
                    str(rec.payload["title"]),
                )
                assert lead in str(rec.payload["explanation"])
        if first is not None and t < start and not is_open:
            first = None  # an earlier episode that closed before the anomaly began
        if not was_open and score < 0.8:  # the baseline follows a healthy pump only
            baseline += 0.002 * (mean - baseline)
    return first, raised


def test_the_advice_on_skab_names_a_plausible_mechanism_or_says_it_does_not_know() -> None:
    report = []
    implausible = []
    alarmed = 0
    for name, cause in CAUSES.items():
        first, _ = replay(name)
        if first is None:
            report.append(f"{name:14} {cause:20} no alarm during the anomaly")
            continue
        alarmed += 1
        ok = first.rule in PLAUSIBLE[cause] | {"abnormal"}
        change = f"{first.change_pct:+.1f}%" if first.change_pct is not None else "?"
        report.append(
            f"{name:14} {cause:20} row {first.row:5d} lead {first.lead} ({first.role}, "
            f"{first.direction}, {change}) -> {first.rule}{'' if ok else '  IMPLAUSIBLE'}"
        )
        if not ok:
            implausible.append(f"{name}: {cause}: {first.title}")
    print("\n".join(["", "first alarm of each anomaly, skab-dev:", *report]))
    assert not implausible, implausible
    # Nearly every anomaly alarms (the research's detector misses cavitation, other/13).
    assert alarmed >= len(CAUSES) - 2, report
