"""The agent's page in a real headless Chromium, with `edge-agent demo` running.

The faulty pump's row turns raised as its recommendation arrives over MQTT, the healthy
pumps stay normal, the report shows a plot whose shaded span covers the fault's onset, and
`edge-agent report` writes the same report as one offline file. Screenshots go to
build/screenshots/ for a person to look at.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.chromium import chromium, screenshot
from tests.demo_proc import LiveDemo
from tests.test_report_cli import _References

ROWS = (
    "return Object.fromEntries([...document.querySelectorAll('#assets tr[data-asset]')]"
    ".map(r => [r.dataset.asset, r.dataset.state]))"
)
PLOTTED = "const c = document.getElementById('charts'); return c ? c.dataset.plotted : null"


def _onset(banner: str) -> float:
    found = re.search(r"simulated \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)", banner)
    assert found is not None, banner
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def _watch_until_raised(driver: WebDriver, demo: LiveDemo) -> float:
    """Poll the rows until pump-3 is raised; healthy pumps must stay normal meanwhile."""
    WebDriverWait(driver, 60).until(lambda d: len(d.execute_script(ROWS)) == 3)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = driver.execute_script(ROWS)
        assert states["pump-1"] == states["pump-2"] == "normal", states
        if states["pump-3"] == "raised":
            return time.monotonic()
        assert states["pump-3"] == "normal", states
        time.sleep(0.1)
    raise AssertionError(f"pump-3 never raised on the page:\n{demo.out}")


def _offline_report(driver: WebDriver, evidence_id: str, state_dir: str, out: Path) -> None:
    """`edge-agent report` writes a file with no external reference; Chromium plots it."""
    argv = ["report", evidence_id, "--state-dir", state_dir, "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.daemon.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    refs = _References()
    refs.feed(out.read_text())
    assert refs.refs == []
    driver.get(out.as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(PLOTTED) == "5")
    screenshot(driver, "report-offline")


def test_page_shows_the_fault_when_mqtt_does_and_its_report_plots_the_onset(
    tmp_path: Path,
) -> None:
    demo = LiveDemo(["--speed", "30", "--assets", "3", "--fault", "cavitation", "--onset", "200"])
    try:
        _, banner = demo.wait_for("develops cavitation", 60)
        onset = _onset(banner)
        _, line = demo.wait_for("Live page:", 5)
        with chromium() as driver:
            driver.get(line.split("Live page:", 1)[1].strip())
            raised_at = _watch_until_raised(driver, demo)
            mqtt_at, _ = demo.wait_for("RAISE", 10)
            # The page polls once a second: it shows the raise when MQTT brings it.
            assert abs(raised_at - mqtt_at) < 3.0, (raised_at, mqtt_at)
            shot = screenshot(driver, "page")
            states = driver.execute_script(ROWS)
            assert states == {"pump-1": "normal", "pump-2": "normal", "pump-3": "raised"}
            assert "pump-3" in driver.find_element("css selector", "#incidents").text

            _, line = demo.wait_for("  report: http", 5)
            evidence_id = line.strip().rsplit("/", 1)[1]
            link = driver.find_element("css selector", f'a.report[href="report/{evidence_id}"]')
            link.click()  # the page links it; the report reloads itself while recording
            WebDriverWait(driver, 60).until(lambda d: d.execute_script(PLOTTED) == "5")
            charts = driver.find_element("id", "charts")
            start = float(charts.get_attribute("data-span-start") or "nan")
            end = float(charts.get_attribute("data-span-end") or "nan")
            assert start <= onset <= end, (start, onset, end)
            leading = driver.find_elements("css selector", "#charts .chart.leading canvas")
            assert len(leading) == 1
            screenshot(driver, "report")

            _, line = demo.wait_for("offline: edge-agent report", 5)
            state_dir = line.split("--state-dir", 1)[1].strip()
            _offline_report(driver, evidence_id, state_dir, tmp_path / "report.html")
        assert shot.stat().st_size > 10_000
    finally:
        run = demo.stop()
    assert run.returncode == 0, run.err
    assert "Traceback" not in run.err, run.err
