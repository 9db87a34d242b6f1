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


class LiveDemo:
    """`edge-agent demo ARGS` running while a test drives it; each stdout line is timed."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.daemon.cli", "demo", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean | dict(env or {}),
        )
        self.lines: list[tuple[float, str]] = []  # (time.monotonic() on arrival, line)
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line))

    @property
    def out(self) -> str:
        """Stdout so far."""
        with self._lock:
            return "".join(line for _, line in self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> tuple[float, str]:
        """The first line containing `pattern` and when it arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                for at, line in self.lines:
                    if pattern in line:
                        return at, line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        err = self.stop().err
        raise AssertionError(f"no {pattern!r} in {timeout_s} s:\n{self.out}\n{err}")

    def stop(self) -> DemoRun:
        """Ctrl-C, wait, and return what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return DemoRun(self.out, err, self.proc.returncode)
