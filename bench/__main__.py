"""`make bench`: every benchmark, one after the other, printing its figures.

`python -m bench NAME...` runs only the named ones.
"""

from __future__ import annotations

import importlib
import sys
import time

# name -> module with a `main()`; in the order a reader follows a reading.
BENCHES = {
    "ingest": "bench.ingest",
    "sparkplug": "bench.bench_sparkplug",
    "opcua": "bench.bench_opcua",
    "models": "bench.bench_models",
    "learn": "bench.bench_learn",
    "rules": "bench.bench_rules",
    "retention": "bench.bench_retention",
    "outbox": "bench.bench_outbox",
    "bundles": "bench.bench_bundles",
}


def run(names: list[str]) -> None:
    """Run the named benchmarks (all when empty)."""
    for name in names or list(BENCHES):
        if name not in BENCHES:
            msg = f"unknown benchmark {name!r}; choose from {', '.join(BENCHES)}"
            raise SystemExit(msg)
        print(f"\n== {name} ==", flush=True)
        started = time.monotonic()
        importlib.import_module(BENCHES[name]).main()
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    run(sys.argv[1:])
