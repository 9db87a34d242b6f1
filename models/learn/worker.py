"""The fit of one asset as its own process: `python -m edge_agent.models.learn.worker IN OUT`.

The agent starts this per asset so that a fit never runs in its event loop. The process
first lowers its own priority (`--nice`) and caps its address space (`--max-memory-mb`,
RLIMIT_AS), and only then imports numpy, onnx and the fit, so that they count against
the cap. It reads IN (an .npz) and writes the model directory OUT. stdout carries JSON
lines only, for the agent to read:
    {"progress": 0.42, "stage": "thresholds"}      while it works
    {"done": true, "manifest": "OUT/manifest.json", "warnings": [...]}   then exit 0
    {"error": "..."}                                then exit 1 (2: bad arguments or input)
Logs go to stderr.

IN holds `rows` [T, S] float, `signals` [S] str and `roles` [S] str; optionally `units`
[S] str, `tolerance_pct` [S] float (NaN: the role's floor), `rate_hz`, `window`, `seed`
(scalars), `breaks` [K] int (rows where a new piece starts) and `name` (str).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_INPUT = 2
REQUIRED = ("rows", "signals", "roles")
OPTIONAL = ("units", "tolerance_pct", "rate_hz", "window", "seed", "breaks", "name")


def emit(**fields: Any) -> None:
    """One JSON line on stdout, flushed at once (the agent reads it as it comes)."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def limit(nice: int, max_memory_mb: int) -> None:
    """Lower this process's priority and cap its address space."""
    if nice:
        os.nice(nice)
    if max_memory_mb > 0:
        cap = max_memory_mb * 1024 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m edge_agent.models.learn.worker",
        description="Fit one asset's rows and write its model directory.",
    )
    p.add_argument("input", type=Path, help="the .npz with rows, signals and roles")
    p.add_argument("out_dir", type=Path, help="the model directory to write")
    p.add_argument("--nice", type=int, default=10, help="added to the priority (0: keep)")
    p.add_argument(
        "--max-memory-mb", type=int, default=1024, help="address-space cap in MiB (0: none)"
    )
    p.add_argument(
        "--tflite",
        choices=("auto", "on", "off"),
        default="auto",
        help="TFLite files (a copy of the shipped template; no TensorFlow needed): auto and on "
        "write them, off does not",
    )
    return p.parse_args(argv)


def _options(given: dict[str, Any], signals: list[str]) -> dict[str, Any]:
    """The optional entries of IN as keyword arguments of FitOptions."""
    out: dict[str, Any] = {}
    if "units" in given:
        out["units"] = dict(zip(signals, (str(u) for u in given["units"]), strict=True))
    if "tolerance_pct" in given:
        pairs = zip(signals, (float(v) for v in given["tolerance_pct"]), strict=True)
        out["tolerance_pct"] = {s: v for s, v in pairs if not math.isnan(v)}  # NaN: the role's
    for key, kind in (("rate_hz", float), ("window", int), ("seed", int)):
        if key in given:
            out[key] = kind(given[key])
    return out


def _run(args: argparse.Namespace) -> int:
    # Imported here, after the limits: they are most of what the process maps.
    import numpy as np  # noqa: PLC0415

    from edge_agent.core.errors import EdgeAgentError  # noqa: PLC0415
    from edge_agent.core.logs import configure  # noqa: PLC0415
    from edge_agent.models.learn.fit import FitOptions  # noqa: PLC0415
    from edge_agent.models.learn.job import Output, fit_rows  # noqa: PLC0415

    configure(fmt="json")
    try:
        with np.load(args.input, allow_pickle=False) as data:
            given = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        emit(error=f"{args.input}: cannot read ({exc})")
        return EXIT_INPUT
    missing = [k for k in REQUIRED if k not in given]
    unknown = sorted(set(given) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        emit(error=f"{args.input}: missing {missing}, unknown {unknown}; holds {sorted(given)}")
        return EXIT_INPUT
    signals = [str(s) for s in given["signals"]]
    try:
        options = FitOptions(**_options(given, signals))
    except (TypeError, ValueError) as exc:
        emit(error=f"{args.input}: {exc} (units and tolerance_pct need one entry per signal)")
        return EXIT_INPUT
    try:
        result = fit_rows(
            np.asarray(given["rows"], np.float64),
            signals,
            [str(r) for r in given["roles"]],
            args.out_dir,
            options,
            output=Output(str(given.get("name", "learned")), args.tflite),
            breaks=[int(b) for b in given.get("breaks", [])],
            progress=lambda f, stage: emit(progress=round(f, 3), stage=stage),
        )
    except EdgeAgentError as exc:
        emit(error=str(exc))
        return EXIT_FAILED
    emit(done=True, manifest=str(result.manifest_path), warnings=list(result.warnings))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Limit the process, fit, write; the exit status says how it went."""
    args = parse(argv)
    try:
        limit(args.nice, args.max_memory_mb)
    except (OSError, ValueError) as exc:
        emit(error=f"cannot lower priority or cap memory: {exc}")
        return EXIT_INPUT
    try:
        return _run(args)
    except MemoryError:
        emit(error=f"out of memory: the fit needs more than --max-memory-mb={args.max_memory_mb}")
        return EXIT_FAILED
    except ImportError as exc:  # the gateway was installed without what the fit needs
        emit(error=f"cannot fit: {exc}; install the learn extra: pip install 'edge-agent[learn]'")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
