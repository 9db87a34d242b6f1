"""The systemd unit: systemd-analyze accepts it, its exposure is 2.0 or better, it installs."""

from __future__ import annotations

import argparse
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from edge_agent.core.errors import ConfigError
from edge_agent.daemon.service.install import install, register, unit_text
from edge_agent.daemon.settings import render_env_file

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edge-agent.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit() -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", str(UNIT)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "edge-agent.service" not in done.stderr, done.stderr  # no warnings about our unit


@needs_analyze
def test_security_exposure_is_two_or_better() -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--threshold=20", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d)", done.stdout)
    assert match is not None, done.stdout
    assert float(match.group(1)) <= 2.0


def test_unit_has_what_the_agent_relies_on() -> None:
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["Restart"] == ["on-failure"]
    assert d["WatchdogSec"]
    assert d["StateDirectory"] == ["edge-agent"]
    assert d["EnvironmentFile"] == ["-/etc/edge-agent/*.env"]
    assert d["LoadCredential"] == ["EDGE:/etc/edge-agent/credentials"]
    assert d["DynamicUser"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["PrivateDevices"] == ["yes"]
    assert d["MemoryDenyWriteExecute"] == ["yes"]
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in d["SystemCallFilter"]
    assert d["ExecStart"] == ["/usr/bin/env edge-agent run"]
    # systemd must wait longer than the agent's own bound on a stop (5 s drain + 4 s by default).
    assert int(d["TimeoutStopSec"][0]) > 10


def test_install_service_puts_files_in_place(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "edge-agent").write_text("#!/bin/sh\n")
    root = tmp_path / "root"
    written = install(root, bin_dir)

    unit = root / "etc/systemd/system/edge-agent.service"
    env = root / "etc/edge-agent/edge-agent.env"
    example = root / "etc/edge-agent/edge-agent.env.example"
    creds = root / "etc/edge-agent/credentials"
    assert set(written) == {unit, env, example}
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert env.read_text() == render_env_file()
    path_line = _directives(unit.read_text())["Environment"][0]
    assert path_line.startswith(f"PATH={bin_dir}:")
    assert unit.read_text() == unit_text(bin_dir)
    if ANALYZE is not None:
        done = subprocess.run(
            [ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
        )
        assert done.returncode == 0, done.stderr

    # A second install keeps the operator's settings and refreshes the example.
    env.write_text("EDGE_MQTT__HOST=broker.plant\n")
    example.write_text("stale\n")
    again = install(root, bin_dir)
    assert env not in again
    assert env.read_text() == "EDGE_MQTT__HOST=broker.plant\n"
    assert example.read_text() == render_env_file()


def test_install_service_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="edge-agent")
    register(parser.add_subparsers(dest="command", required=True))
    root = tmp_path / "root"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "edge-agent").write_text("#!/bin/sh\n")
    args = parser.parse_args(["install-service", "--root", str(root), "--bin-dir", str(bin_dir)])
    assert args.func(args) == 0
    assert (root / "etc/systemd/system/edge-agent.service").is_file()


def test_install_service_names_a_wrong_bin_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--bin-dir"):
        install(tmp_path / "root", tmp_path)
