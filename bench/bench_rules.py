"""Rule evaluation cost of the default pack: windows/s and rule evaluations/s through Advisor.

The windows are synthetic but shaped like the pipeline's (five signals, eight classes, 100
assets, mostly normal with a share of anomalous ones so raises, clears and reviews happen).
A pack that makes the advisor slower than the scorer becomes the agent's bottleneck. Most
windows settle every condition by its guard and build neither values nor a CEL context; the
last lines say how many needed CEL and what one window's values and context cost.
"""

from __future__ import annotations

import random
import time
from typing import Any

from edge_agent.core.readings import SignalStats, WindowResult
from edge_agent.rules import window
from edge_agent.rules.conditions import VARIABLES
from edge_agent.rules.engine import Advisor, load_pack

SIGNALS = ["temperature", "vibration", "current", "pressure", "flow"]
CLASSES = ["normal", "bearing_wear", "cavitation", "misalignment", "overheating"]
CLASSES += ["stuck_sensor", "drifting_sensor", "unknown"]
BASE = {"temperature": 45.0, "vibration": 1.8, "current": 22.0, "pressure": 4.5, "flow": 80.0}
ASSETS = 100
WINDOWS = 40_000
BATCH = 64


def _windows(rng: random.Random) -> list[WindowResult]:
    out: list[WindowResult] = []
    for i in range(WINDOWS):
        asset = f"pump-{i % ASSETS}"
        faulty = (i // ASSETS) % 50 > 40 and (i % ASSETS) % 7 == 0
        cls = CLASSES[1 + (i % ASSETS) % 6] if faulty else "normal"
        stats = {}
        contrib = {}
        for s, b in BASE.items():
            m = b * (1.0 + rng.gauss(0.0, 0.02) + (0.6 if faulty and s == "vibration" else 0.0))
            stats[s] = SignalStats(
                m, m, m * 0.97, m * 1.03, rng.gauss(0, 0.001), b, (m - b) / b * 100
            )
            contrib[s] = (m - b) / b
        probs = dict.fromkeys(CLASSES, 0.01)
        probs[cls] = 0.9
        score = 2.5 if faulty else abs(rng.gauss(0.4, 0.1))
        out.append(
            WindowResult(asset, 1.8e9 + 5.0 * (i // ASSETS), score, 1.0, contrib, probs, stats)
        )
    return out


def main() -> None:
    rng = random.Random(7)
    pack = load_pack([])
    results = _windows(rng)
    advisor = Advisor(
        pack,
        model_name="bench",
        model_version="0",
        signals=SIGNALS,
        classes=CLASSES,
        gateway_id="bench",
    )
    built = _count_cel_windows()
    started = time.perf_counter()
    produced = 0
    for k in range(0, len(results), BATCH):
        produced += len(advisor.evaluate(results[k : k + BATCH]))
    elapsed = time.perf_counter() - started
    rules = len(pack.rules)
    per_window = rules + 2  # the flag; each rule: raise or clear (escalations aside); review
    print(f"default pack {pack.version}: {rules} rules, {ASSETS} assets, {len(results)} windows")
    rate = len(results) / elapsed
    print(f"advisor: {rate:,.0f} windows/s, ~{rate * per_window:,.0f} condition evaluations/s")
    print(f"  {produced} recommendations")
    print(f"  windows that needed CEL (a guard held and a CEL part followed): {len(built)}")
    # What CEL costs where it is needed: every root of the values, into a CEL context.
    meta = {"type": "pump", "criticality": "medium", "state": "running"}
    roots = sorted(VARIABLES - {"k", "at_raise"})
    started = time.perf_counter()
    for r in results[:2000]:
        window.Window(r, CLASSES, meta, pack).cel_context(roots)
    build = (time.perf_counter() - started) / 2000
    print(f"  values + CEL context of one window, every root: {build * 1e6:.0f} us")


def _count_cel_windows() -> set[int]:
    """Count the windows that reach CEL (a bench may patch; the agent never does)."""
    seen: set[int] = set()
    cel_context = window.Window.cel_context

    def counted(self: window.Window, *args: Any, **kwargs: Any) -> Any:
        seen.add(id(self.result))
        return cel_context(self, *args, **kwargs)

    window.Window.cel_context = counted  # type: ignore[method-assign]
    return seen


if __name__ == "__main__":
    main()
