"""The rules load CEL without its command-line interface, and the CLI still loads on request."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
import edge_agent.daemon.app
from edge_agent.rules.celrt import cel
loaded = sorted(m for m in ("typer", "prompt_toolkit", "cel.cli") if m in sys.modules)
assert not loaded, loaded
assert cel.compile("x + 1").execute(cel.Context({"x": 1})) == 2
import cel.cli
assert callable(cel.cli.main), "the real CLI, not the placeholder"
print("ok")
"""


def test_agent_imports_cel_without_its_cli() -> None:
    # A fresh interpreter: this test process may have imported cel (or its CLI) already.
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
