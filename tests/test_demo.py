"""`edge-agent demo`: recommendations printed as they arrive, Ctrl-C exits 0 without a traceback."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time


def test_demo_prints_a_recommendation_and_stops_cleanly_on_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.daemon.cli",
            "demo",
            "--speed",
            "60",
            "--fault",
            "overheating",
            "--onset",
            "120",
            "--assets",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    out: list[str] = []
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not any("RAISE" in line for line in out):
            if sel.select(timeout=1.0):
                line = proc.stdout.readline()
                if not line:
                    break
                out.append(line)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(out) + rest
    assert "RAISE" in text, text + err
    assert "pump-3" in text
    assert "overheating" in text
    assert "demo stopped" in text
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
