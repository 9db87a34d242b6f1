"""`edge-agent demo`: recommendations printed as they arrive, Ctrl-C exits 0 without a traceback."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
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
            "300",
            "--assets",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    out: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and not any("RAISE" in line for line in out):
            try:
                out.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        reader.join(5)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    while not lines.empty():
        out.append(lines.get())
    rest = ""
    text = "".join(out) + rest
    assert "RAISE" in text, text + err
    assert "pump-3" in text
    assert "overheating" in text
    assert "demo stopped" in text
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
