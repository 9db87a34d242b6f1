"""The wheel: built without a setuptools warning, and it carries the page and its licence."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# pip's own notes about its environment, not the project's build.
_NOT_OURS = ("byte-compiling is disabled",)


def test_wheel_builds_without_warnings_and_ships_the_page(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    warnings = [
        line
        for line in log.splitlines()
        if "warning" in line.lower() and not any(n in line for n in _NOT_OURS)
    ]
    assert warnings == [], "\n".join(warnings)
    [wheel] = tmp_path.glob("edge_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (
        "edge_agent/daemon/web/static/index.html",
        "edge_agent/daemon/web/static/uPlot.iife.min.js",
        "edge_agent/daemon/web/static/uPlot.LICENSE",
        "edge_agent/rules/packs/default.yaml",
        "edge_agent/models/artifacts/manifest.json",
    ):
        assert name in names, name
    assert not any(n.startswith(("daemon/", "rules/", "models/")) for n in names)
