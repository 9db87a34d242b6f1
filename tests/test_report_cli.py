"""`edge-agent report <evidence-id>`: one HTML file that references nothing outside itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from edge_agent.core.readings import Reading, SignalStats, WindowResult
from edge_agent.daemon.retention.keeper import Retention
from edge_agent.daemon.retention.settings import RetentionSettings
from edge_agent.daemon.web.journal import Journal
from edge_agent.daemon.web.observer import LiveState
from tests.chromium import chromium, screenshot
from tests.test_web_state import _rec

T0 = 1_750_000_000.0
SIGNALS = ("pressure", "flow", "vibration")
ONSET = T0 + 60


class _References(HTMLParser):
    """Every way a page can reach outside itself: attributes, CSS url(), imports."""

    ATTRS = frozenset({"src", "href", "srcset", "action", "data", "poster", "formaction"})

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_script = tag == "script"
        for name, value in attrs:
            if name in self.ATTRS and value is not None:
                self.refs.append(value)
            if name == "style" and value and "url(" in value:
                self.refs.append(value)
        if tag in ("link", "iframe", "embed", "object", "img", "base"):
            self.refs.append(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)
        for found in re.findall(r"url\(\s*['\"]?([^'\")]+)", data):
            if not found.startswith("data:"):
                self.refs.append(found)
        if "@import" in data:
            self.refs.append("@import")


def _state_dir(tmp_path: Path) -> tuple[Path, str]:
    """A state directory as the agent leaves it: one evidence record and its incident."""
    retention = Retention(
        RetentionSettings(evidence_pre_s=60.0, evidence_post_s=60.0), tmp_path, gateway="gw"
    )
    rng = np.random.default_rng(3)
    readings = []
    for t in range(200):
        ts = T0 + t
        faulty = ts >= ONSET
        readings += [
            Reading("pump-3", "pressure", ts, 3.3 - (1.2 if faulty else 0.0) + rng.normal(0, 0.03)),
            Reading("pump-3", "flow", ts, 80.0 + rng.normal(0, 1.0)),
            Reading(
                "pump-3", "vibration", ts, 2.0 + (0.3 if faulty else 0.0) + rng.normal(0, 0.05)
            ),
        ]
    retention.ingest(readings[: 3 * 100])
    evidence_id = retention.trigger("pump-3", T0 + 80, "cavitation")
    retention.ingest(readings[3 * 100 :])
    retention.close()
    live = LiveState(Journal(tmp_path), window_s=30.0)
    stats = {
        s: SignalStats(1, 1, 1, 1, 0, b, 0) for s, b in zip(SIGNALS, (3.3, 80, 2), strict=True)
    }
    for ts in range(int(T0) + 30, int(T0) + 85, 5):
        score = 5.0 if ts >= ONSET + 5 else 0.5
        live.scored([WindowResult("pump-3", float(ts), score, 1.0, {}, {}, stats)])
    signals = [
        {"signal": "pressure", "direction": "down", "contribution": -9.0, "change_pct": -36.0},
        {"signal": "vibration", "direction": "up", "contribution": 2.0, "change_pct": 15.0},
    ]
    live.published(
        [
            _rec(
                "raise",
                "pump-3",
                T0 + 80,
                "r1",
                evidence_id=evidence_id,
                signals=signals,
                action={"text": "Check the suction side.", "due_within_h": 48},
                evidence={"stats.pressure.change_pct": -36.0},
                cause={"class": "cavitation", "probability": 0.97},
            )
        ]
    )
    return tmp_path, evidence_id


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.daemon.cli", "report", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_report_is_one_offline_file_with_the_plot_the_advice_and_the_timeline(
    tmp_path: Path,
) -> None:
    state, evidence_id = _state_dir(tmp_path / "state")
    out = tmp_path / "report.html"
    done = _report(evidence_id, "--state-dir", str(state), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    html = out.read_text()
    parser = _References()
    parser.feed(html)
    assert parser.refs == []  # nothing outside the file: no src, href, link, url(), @import
    assert "uPlot" in "".join(parser.scripts)  # the library itself is inline
    assert "Check the suction side." in html
    assert "cavitation" in html
    assert "stats.pressure.change_pct" in html  # the rule's inputs
    assert "timeline-table" in html
    [data] = re.findall(
        r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL
    )
    plot = json.loads(data)
    assert plot["signals"][0]["name"] == "pressure"  # the leading signal first
    assert plot["signals"][0]["leading"] is True
    span_start, span_end = plot["span"]
    assert span_start <= ONSET <= span_end
    assert all(s["band"] is not None for s in plot["signals"])
    with chromium() as driver:
        driver.get(out.as_uri())
        plotted = driver.execute_script("return document.getElementById('charts').dataset.plotted")
        assert plotted == "3"
        canvases = driver.execute_script(
            "return document.querySelectorAll('#charts canvas').length"
        )
        assert canvases == 3
        screenshot(driver, "report-cli")


def test_report_of_an_unknown_id_says_why_in_one_line(tmp_path: Path) -> None:
    state, _ = _state_dir(tmp_path)
    done = _report("0000-unknown", "--state-dir", str(state), "--out", str(tmp_path / "x.html"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "no record" in done.stderr
    assert "Traceback" not in done.stderr
    done = _report("../etc", "--state-dir", str(state))
    assert done.returncode == 1
    assert "not an evidence id" in done.stderr
