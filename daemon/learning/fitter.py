"""A fit as a process of its own: `python -m edge_agent.models.learn.worker IN OUT`.

The event loop only starts the process and reads its lines (asyncio subprocess), so a fit
never stalls ingest. The process starts at the lowest priority the system offers for
background work: SCHED_IDLE and the configured nice value (through `chrt` and `nice` where
they exist; the worker lowers its own nice value otherwise), so that its interpreter start and
imports already yield to the agent; the worker caps its own memory before it imports anything
heavy. Its stdout carries JSON lines (progress, then done or an error); its
stderr is kept as a bounded tail for the log when it fails without saying why. A fit that
runs past its time, or is cancelled (relearn, stop), has its process killed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

WORKER = "edge_agent.models.learn.worker"
STDERR_LINES = 20  # kept from a failing worker's stderr
MAX_LINE = 1 << 16  # a longer stdout line is not the worker's JSON


@dataclass(frozen=True)
class FitLimits:
    """How a worker runs: priority, memory, time, whether it writes TFLite files."""

    nice: int = 10
    memory_mb: int = 1024
    timeout_s: float = 900.0
    tflite: str = "off"


@dataclass
class FitOutcome:
    """What a worker said at the end: the manifest it wrote, or why it could not."""

    manifest: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


async def _read(
    stream: asyncio.StreamReader, outcome: FitOutcome, progress: Callable[[float, str], None]
) -> None:
    while line := await stream.readline():
        try:
            msg = json.loads(line[:MAX_LINE])
        except ValueError:
            continue  # not ours (a library printing); the worker's own lines are JSON
        if not isinstance(msg, dict):
            continue
        if "progress" in msg:
            progress(float(msg["progress"]), str(msg.get("stage", "")))
        elif msg.get("done"):
            outcome.manifest = Path(str(msg["manifest"]))
            outcome.warnings = [str(w) for w in msg.get("warnings", [])]
        elif "error" in msg:
            outcome.error = str(msg["error"])


async def _tail(stream: asyncio.StreamReader, keep: deque[str]) -> None:
    while line := await stream.readline():
        keep.append(line.decode("utf-8", "replace").rstrip()[:500])


def _low_priority(nice: int) -> tuple[list[str], int]:
    """The low-priority prefix of the command, and the nice value the worker still adds.

    `chrt --idle 0` and `nice -n N`, those of them this system has.
    """
    prefix: list[str] = []
    if (chrt := shutil.which("chrt")) is not None:
        prefix += [chrt, "--idle", "0"]
    if nice and (nice_cmd := shutil.which("nice")) is not None:
        return [*prefix, nice_cmd, "-n", str(nice)], 0
    return prefix, nice


async def run_fit(
    data: Path,
    out_dir: Path,
    limits: FitLimits,
    progress: Callable[[float, str], None],
) -> FitOutcome:
    """Run one worker to its end; never raises for what the fit itself refused."""
    prefix, own_nice = _low_priority(limits.nice)
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        WORKER,
        str(data),
        str(out_dir),
        "--nice",
        str(own_nice),
        "--max-memory-mb",
        str(limits.memory_mb),
        "--tflite",
        limits.tflite,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=MAX_LINE * 2,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    outcome = FitOutcome()
    stderr: deque[str] = deque(maxlen=STDERR_LINES)
    try:
        async with asyncio.timeout(limits.timeout_s):
            await asyncio.gather(
                _read(proc.stdout, outcome, progress), _tail(proc.stderr, stderr), proc.wait()
            )
    except TimeoutError:
        outcome.error = f"the fit ran longer than EDGE_LEARNING__FIT_TIMEOUT_S={limits.timeout_s:g}"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0 and outcome.error is None:
        outcome.error = f"the fit worker exited with status {proc.returncode}"
        log.warning("fit worker failed", status=proc.returncode, stderr="\n".join(stderr))
    if outcome.error is not None:
        outcome.manifest = None
    elif outcome.manifest is None:
        outcome.error = "the fit worker ended without writing a model"
    return outcome
