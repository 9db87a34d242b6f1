"""What the agent imports: only the parts it is configured to use (issue 14, RSS).

Each case runs in a fresh interpreter, since this one has imported everything by now.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Heavy or unused at run time unless configured: onnxruntime ~30 MB, LiteRT ~12 MB,
# asyncua ~15 MB, cryptography (bundles) ~9 MB; the simulator and training never.
NOT_AT_IMPORT = (
    "onnxruntime",
    "ai_edge_litert",
    "tflite_runtime",
    "asyncua",
    "cryptography",
    "edge_agent.daemon.bundles.bundle",
    "edge_agent.simulator",
    "edge_agent.models.training",
    "edge_agent.models.learn",
)


def _loaded(code: str, names: tuple[str, ...]) -> dict[str, bool]:
    """Run `code` in a new interpreter; say which of `names` it left in sys.modules."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps({{n: n in sys.modules for n in {list(names)!r}}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "code",
    [
        "import edge_agent.daemon.app",
        # `edge-agent run` (what systemd starts): the command line with every subcommand's
        # parser, before the agent itself.
        "import edge_agent.daemon.cli as c\nc.build_parser()\nimport edge_agent.daemon.app",
    ],
    ids=["app", "cli"],
)
def test_importing_the_agent_loads_no_runtime_it_may_not_use(code: str) -> None:
    loaded = _loaded(code, NOT_AT_IMPORT)
    assert not [name for name, yes in loaded.items() if yes]


@pytest.mark.parametrize(
    ("backend", "serves", "unused"),
    [("onnx", "onnxruntime", "ai_edge_litert"), ("litert", "ai_edge_litert", "onnxruntime")],
)
def test_only_the_backend_that_serves_is_imported(backend: str, serves: str, unused: str) -> None:
    loaded = _loaded(
        f"""
        from edge_agent.models.manifest import load_manifest
        from edge_agent.models.scorer import Scorer
        cpu = ("CPUExecutionProvider",)
        Scorer(load_manifest(None), backends=({backend!r},), onnx_providers=cpu)
        """,
        (serves, unused),
    )
    assert loaded == {serves: True, unused: False}
