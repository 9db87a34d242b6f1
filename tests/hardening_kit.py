"""What the hardening tests (issue 13) share: the real agent, its /health and /metrics, feeds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.simulator.broker import Broker
from edge_agent.simulator.plant import FaultSpec, PumpStream
from tests.agent_proc import ROOT, AgentProcess, Listener

START = 1_750_000_000.0
RECS = "edge-agent/gw-test/recommendations/#"
DEAD = "edge-agent/gw-test/deadletter/#"
CAN_MOUNT = shutil.which("unshare") is not None and os.geteuid() == 0


class Agent(AgentProcess):
    """The agent process, optionally on a read-only bind mount of its state directory."""

    def __init__(
        self,
        broker: Broker,
        state_dir: Path,
        env: dict[str, str] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        super().__init__(broker, state_dir, env)
        self.state_dir = state_dir
        self.read_only = read_only
        self.port = 0

    def start(self) -> None:
        """Start it (under its own mount namespace when read-only); returns at once."""
        if not self.read_only:
            super().start()
            return
        d = str(self.state_dir)
        script = (
            f'mount --bind "{d}" "{d}" && mount -o remount,ro,bind "{d}" && '
            f'exec "{sys.executable}" -m edge_agent.daemon.cli run'
        )
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", script],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def running(self, timeout_s: float = 60.0) -> None:
        """Start and wait until it serves."""
        self.start()
        self.port = int(self.wait_for_log("metrics endpoint up", timeout_s)["port"])
        self.wait_for_log("agent running", timeout_s)

    def get(self, path: str) -> tuple[int, bytes]:
        """GET a path of its HTTP endpoint."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        """/health as JSON."""
        _, body = self.get("/health")
        out: dict[str, Any] = json.loads(body)
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples whose labels include `labels`."""
        _, body = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def events(self, event: str) -> list[dict[str, Any]]:
        """Its log lines of one event so far."""
        with self._new:
            return [x for x in self.lines if x.get("event") == event]

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def stop_timed(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        """Signal it; return its exit code and how long it took to exit."""
        t0 = time.monotonic()
        code = self.stop(sig, timeout_s=60)
        return code, time.monotonic() - t0


def feed(listener: Listener, pump: PumpStream, steps: int, topic: str = "") -> float:
    """Publish `steps` samples of a pump; return the last timestamp."""
    ts = 0.0
    for _ in range(steps):
        ts, values = pump.step()
        body = json.dumps({"ts": ts, **values}).encode()
        listener.publish(topic or f"plant/{pump.asset}/telemetry", body)
    return ts


def faulty(
    asset: str, kind: str = "cavitation", onset_s: float = 300.0, seed: int = 3
) -> PumpStream:
    """A pump that develops `kind` after `onset_s` simulated seconds."""
    return PumpStream(asset, seed=seed, start_ts=START, fault=FaultSpec(kind, onset_s))


def wait_until(what: Callable[[], bool], timeout_s: float = 60.0, every_s: float = 0.2) -> bool:
    """Poll until `what()` holds; return whether it did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(every_s)
    return what()


def received(listener: Listener, into: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Everything the listener got so far, accumulated in `into`."""
    into += listener.drain()
    return into


def recs_of(got: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The recommendations among received messages."""
    return [json.loads(p) for t, p in got if "/recommendations/" in t]
