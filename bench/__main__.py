"""`make bench`: every benchmark, one after the other, printing its figures.

`python -m bench NAME...` runs only the named ones. Figures go to stdout; everything written
to stderr while a benchmark runs (the agent's log lines, its libraries' warnings, those of
the processes it starts) goes to build/bench.log, so the figures read on their own.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from edge_agent.core import logs

LOG = Path(__file__).resolve().parent.parent / "build" / "bench.log"


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (this process and its children) to `path` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


# name -> module with a `main()`; in the order a reader follows a reading.
BENCHES = {
    "ingest": "bench.ingest",
    "latency": "bench.bench_latency",
    "startup": "bench.bench_startup",
    "sparkplug": "bench.bench_sparkplug",
    "opcua": "bench.bench_opcua",
    "models": "bench.bench_models",
    "learn": "bench.bench_learn",
    "learning": "bench.bench_learning",
    "rules": "bench.bench_rules",
    "retention": "bench.bench_retention",
    "outbox": "bench.bench_outbox",
    "bundles": "bench.bench_bundles",
    "web": "bench.bench_web",
}


def run(names: list[str]) -> None:
    """Run the named benchmarks (all when empty), each in a process of its own.

    One process for all of them let each leave its mark on the next: threads and runtime
    sessions still alive, a heap that made a garbage collection in the outbox's measurement
    take 75 ms (0.4 ms alone), models 1.6x slower than when run alone.
    """
    for name in names:
        if name not in BENCHES:
            msg = f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}"
            raise SystemExit(msg)
    LOG.unlink(missing_ok=True)
    failed = []
    for name in names or list(BENCHES):
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        with _stderr_to(LOG):
            code = subprocess.run(
                [sys.executable, "-m", "bench", "--one", name], check=False
            ).returncode
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)
        if code != 0:
            print(f"({name} FAILED: exit code {code}; its traceback is in {LOG})", flush=True)
            failed.append(name)
    print(f"\nlog lines: {LOG}", flush=True)
    if failed:
        raise SystemExit(f"benchmarks that failed: {', '.join(failed)}")


def _one(name: str) -> None:
    """Run one benchmark in this process (what `run` starts for each)."""
    logs.configure("info", "console", sys.stderr)
    importlib.import_module(BENCHES[name]).main()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        _one(sys.argv[2])
    else:
        run(sys.argv[1:])
