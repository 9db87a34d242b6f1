"""Packaging: the folders install as edge_agent.*, nothing generic lands in site-packages."""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

import edge_agent.connectors
import edge_agent.daemon
import edge_agent.models
import edge_agent.rules

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("daemon", "connectors", "models", "rules", "simulator", "systemd")


def test_editable_install_maps_the_folders() -> None:
    for module, folder in (
        (edge_agent.daemon, "daemon"),
        (edge_agent.connectors, "connectors"),
        (edge_agent.models, "models"),
        (edge_agent.rules, "rules"),
    ):
        assert module.__file__ is not None
        assert Path(module.__file__).resolve().parent == ROOT / folder


def _run(*cmd: str | Path) -> str:
    # Away from the checkout: its edge_agent/ links would shadow what the venv installed.
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, timeout=600, cwd="/"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_clean_venv_install(tmp_path: Path, editable: bool) -> None:
    """`pip install .` (a wheel build) and `pip install -e .` both import and add the command."""
    env = tmp_path / "venv"
    venv.create(env, with_pip=True, system_site_packages=False)
    py = env / "bin" / "python"
    # --no-deps keeps the test fast; the dependencies themselves are exercised by every other
    # test. The build itself runs in pip's isolated build environment, as a user's would.
    target = ["-e", str(ROOT)] if editable else [str(ROOT)]
    _run(py, "-m", "pip", "install", "-q", "--no-deps", *target)
    assert (env / "bin" / "edge-agent").exists()
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    names = {p.name for p in site.iterdir()}
    for generic in GENERIC:
        assert generic not in names, f"{generic} installed as a top-level module"
        assert f"{generic}.py" not in names
    out = _run(
        py,
        "-c",
        # The daemon's own __init__ sets up logging (structlog, not installed here): where
        # the package lies is asked without running it.
        "import importlib.util, edge_agent.core.errors, edge_agent.core.readings, "
        "edge_agent.connectors, edge_agent.models, edge_agent.rules, edge_agent.simulator; "
        "print(importlib.util.find_spec('edge_agent.daemon').origin)",
    )
    located = Path(out.strip()).resolve()
    if editable:
        assert located == ROOT / "daemon" / "__init__.py"
    else:
        assert located.is_relative_to(site)
        assert (site / "edge_agent" / "models" / "artifacts" / "manifest.json").exists() or not (
            ROOT / "models" / "artifacts" / "manifest.json"
        ).exists()
