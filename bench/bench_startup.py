"""Start-up: from `edge-agent run` being started to its READY=1, and its RSS at that moment.

The agent runs as systemd runs it: its own process, the notify socket in `$NOTIFY_SOCKET`
(here a datagram socket this benchmark reads), default settings but for the broker's port
and a fresh state directory. READY=1 comes once the model is loaded and the uplink and the
sensor source are connected and subscribed. Each run is stopped with SIGTERM after READY.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge_agent.simulator.broker import running_broker

RUNS = 3
TIMEOUT_S = 60.0


def _command() -> list[str]:
    script = Path(sys.executable).with_name("edge-agent")
    if script.exists():
        return [str(script), "run"]
    found = shutil.which("edge-agent")
    if found:
        return [found, "run"]
    return [sys.executable, "-c", "from edge_agent.daemon.cli import main; main(['run'])"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _once(port: int) -> tuple[float, float]:
    """Seconds from start to READY=1, and RSS in MB then."""
    with tempfile.TemporaryDirectory(prefix="edge-bench-start-") as d:
        path = Path(d) / "notify"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")} | {
            "NOTIFY_SOCKET": str(path),
            "EDGE_MQTT__PORT": str(port),
            "EDGE_AGENT__STATE_DIR": str(Path(d) / "state"),
            "EDGE_AGENT__GATEWAY_ID": "bench-start",
            "EDGE_SERVICE__HTTP_PORT": "0",  # the default port may be taken by another run
            "EDGE_LOG__LEVEL": "warning",
        }
        started = time.monotonic()
        proc = subprocess.Popen(
            _command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = started + TIMEOUT_S
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    msg = f"no READY=1 within {TIMEOUT_S:g} s (exit code {proc.poll()})"
                    raise RuntimeError(msg)
                sock.settimeout(left)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if b"READY=1" in data.split(b"\n"):
                    return time.monotonic() - started, _rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            sock.close()


def main() -> None:
    """Print time to READY=1 and RSS at READY, median and range over RUNS starts."""
    with running_broker() as broker:
        runs = [_once(broker.port) for _ in range(RUNS)]
    secs = [s for s, _ in runs]
    rss = [r for _, r in runs]
    print(f"startup: `{' '.join(Path(c).name for c in _command()[:2])}`, default settings")
    print(
        f"  process start -> READY=1: median {statistics.median(secs):.2f} s "
        f"({min(secs):.2f}-{max(secs):.2f} over {RUNS} starts)"
    )
    print(
        f"  RSS at READY: median {statistics.median(rss):.0f} MB ({min(rss):.0f}-{max(rss):.0f} MB)"
    )


if __name__ == "__main__":
    main()
