"""EDGE_MODEL__BACKENDS=auto: LiteRT first without an NVIDIA GPU, ONNX first with one.

And where LiteRT cannot be imported (a platform without ai-edge-litert wheels), the chain
moves on to ONNX: checked in fresh interpreters in which neither LiteRT package can be
imported, the way Python behaves when they are not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.settings import Settings, load_settings
from edge_agent.models.settings import NVIDIA_MARKERS, ModelSettings, auto_backends
from edge_agent.simulator.broker import Broker
from tests.agent_proc import AgentProcess

# Run first in a child: Python raises ModuleNotFoundError for a name whose sys.modules entry
# is None, as it does for a package that is not installed.
NO_LITERT = "import sys\nsys.modules['ai_edge_litert'] = sys.modules['tflite_runtime'] = None\n"


def test_auto_puts_onnx_first_only_with_an_nvidia_gpu_and_a_gpu_runtime(tmp_path: Path) -> None:
    markers = (tmp_path / "nvidia0", tmp_path / "nv_tegra_release")
    gpu_build = ("numpy",)  # an installed distribution, standing for onnxruntime-gpu
    assert auto_backends(markers, gpu_build) == (["litert", "onnx"], "no NVIDIA GPU visible")
    markers[1].write_text("# R36 (release), REVISION: 4.0\n")
    order, why = auto_backends(markers, gpu_build)
    assert order == ["onnx", "litert"]
    assert str(markers[1]) in why
    assert "numpy installed" in why
    # A GPU, but ONNX Runtime's CPU-only build: LiteRT is the faster and smaller choice.
    order, why = auto_backends(markers, ("no-such-onnxruntime-build",))
    assert order == ["litert", "onnx"]
    assert "no GPU build of ONNX Runtime installed (no-such-onnxruntime-build)" in why


def test_the_default_is_auto_and_resolves_on_this_box() -> None:
    model = ModelSettings()
    assert model.backends == "auto"
    expected, why = auto_backends(NVIDIA_MARKERS)
    assert model.backend_order() == (expected, f"auto: {why}")
    assert model.order == expected
    assert Settings().model.order == expected


def test_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_MODEL__BACKENDS", '["onnx"]')
    assert load_settings().model.backend_order() == (["onnx"], "EDGE_MODEL__BACKENDS")
    monkeypatch.setenv("EDGE_MODEL__BACKENDS", "auto")
    assert load_settings().model.order == auto_backends()[0]
    monkeypatch.setenv("EDGE_MODEL__BACKENDS", '["litert"')
    with pytest.raises(ConfigError, match=r"EDGE_MODEL__BACKENDS=\[\"litert\": expected auto or"):
        load_settings()
    monkeypatch.setenv("EDGE_MODEL__BACKENDS", '["tpu"]')
    with pytest.raises(ConfigError, match="EDGE_MODEL__BACKENDS"):
        load_settings()


def _run(code: str) -> dict[str, object]:
    probe = NO_LITERT + textwrap.dedent(code)
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_without_litert_the_chain_falls_back_to_onnx_and_counts_it() -> None:
    got = _run(
        """
        import json, sys
        import numpy as np
        from edge_agent.core import metrics
        from edge_agent.models.manifest import load_manifest
        from edge_agent.models.scorer import Scorer
        from edge_agent.models.settings import auto_backends
        order, _ = auto_backends(())  # what a box without an NVIDIA GPU resolves to
        m = load_manifest(None)
        cpu = ("CPUExecutionProvider",)
        s = Scorer(m, backends=order, onnx_providers=cpu)
        x = np.random.default_rng(3).normal(size=(7, m.window, len(m.signals)))
        x = (x * m.normalisation.std + m.normalisation.mean).astype(np.float32)
        out = s.score(x).score
        ref = Scorer(m, backends=("onnx",), onnx_providers=cpu).score(x).score
        failed = metrics.BACKEND_FAILURES.labels(backend="litert", stage="load")._value.get()
        print(json.dumps({
            "order": order, "backend": s.backend_name, "failed": failed,
            "same": bool(np.array_equal(out, ref)), "n": len(out),
            "loaded": "ai_edge_litert" in sys.modules and sys.modules["ai_edge_litert"] is not None,
        }))
        """
    )
    assert got == {
        "order": ["litert", "onnx"],
        "backend": "onnx:CPUExecutionProvider",
        "failed": 1.0,
        "same": True,
        "n": 7,
        "loaded": False,
    }


def test_the_agent_without_litert_serves_on_onnx(broker: Broker, tmp_path: Path) -> None:
    """The whole agent on the order a GPU-less box resolves to, with LiteRT not importable."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_LITERT)
    env = {"PYTHONPATH": str(hook), "EDGE_MODEL__BACKENDS": json.dumps(auto_backends(())[0])}
    agent = AgentProcess(broker, tmp_path / "state", env)
    agent.start()
    try:
        agent.wait_for_log("agent running")
        unavailable = agent.wait_for_log("model backend unavailable", timeout_s=1)
        loaded = agent.wait_for_log("model loaded", timeout_s=1)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
    assert unavailable["backend"] == "litert"
    assert "ai_edge_litert" in unavailable["error"]
    assert loaded["backend"] == "onnx:CPUExecutionProvider"
    assert loaded["backends"] == ["litert", "onnx"]
    assert loaded["backends_chosen_by"] == "EDGE_MODEL__BACKENDS"


def test_the_agent_logs_the_order_auto_chose(broker: Broker, tmp_path: Path) -> None:
    agent = AgentProcess(broker, tmp_path / "state")
    agent.start()
    try:
        agent.wait_for_log("agent running")  # its signal handlers are in place by then
        loaded = agent.wait_for_log("model loaded", timeout_s=1)
        assert agent.stop() == 0, agent.log_text()
    finally:
        agent.kill()
    order, why = auto_backends()
    assert loaded["backends"] == order
    assert loaded["backends_chosen_by"] == f"auto: {why}"
    assert loaded["backend"].startswith(order[0])
