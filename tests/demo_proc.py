"""Run `edge-agent demo` as a subprocess, read its output until a condition holds, then Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class DemoRun:
    """What a finished demo left: its stdout, its stderr and its exit status."""

    out: str
    err: str
    returncode: int | None


def run_demo(
    args: Sequence[str],
    *,
    until: Callable[[str], bool],
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> DemoRun:
    """Run `edge-agent demo ARGS` until `until(stdout so far)` or `timeout_s`, then SIGINT it.

    The environment is the test's own less every EDGE_ variable, plus `env`. Stdout is read on
    a thread so a demo that prints nothing cannot hang the test past `timeout_s`.
    """
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.daemon.cli", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean | dict(env or {}),
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until("".join(out)):
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
    return DemoRun("".join(out), err, proc.returncode)
