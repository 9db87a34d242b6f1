"""`edge-agent check-config` refuses what `run` would refuse or silently ignore (issue 13, case
8): each case through the real command, which must exit non-zero naming the setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE = '[{"node_id": "ns=2;s=pump-1.temperature", "asset": "pump-1", "signal": "temperature"}]'


def check_config(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run the command with only `env` set (besides a writable state directory)."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_")}
    state = tmp_path / "state"
    full = clean | {"EDGE_AGENT__STATE_DIR": str(state)} | env
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.daemon.cli", "check-config", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


CASES = {
    "missing manifest": ({"EDGE_MODEL__MANIFEST": "/nonexistent/manifest.json"}, "MODEL__MANIFEST"),
    "missing rule pack": ({"EDGE_RULES__PACKS": '["/nonexistent/pack.yaml"]'}, "RULES__PACKS"),
    "missing trusted keys": (
        {"EDGE_UPDATES__TRUSTED_KEYS": "/nonexistent/trusted.keys"},
        "EDGE_UPDATES__TRUSTED_KEYS",
    ),
    "missing TLS CA": ({"EDGE_MQTT__TLS_CA": "/nonexistent/ca.pem"}, "EDGE_MQTT__TLS_CA"),
    "missing uplink TLS CA": (
        {"EDGE_UPLINK__HOST": "up.example", "EDGE_UPLINK__TLS_CA": "/nonexistent/ca.pem"},
        "EDGE_UPLINK__TLS_CA",
    ),
    "ingest topic without {asset}": (
        {"EDGE_INGEST__TOPICS": '["plant/telemetry"]'},
        "EDGE_INGEST__TOPICS",
    ),
    "a signal no model knows": (
        {"EDGE_INGEST__SIGNALS": '{"t": "temp"}'},
        "EDGE_INGEST__SIGNALS",
    ),
    "OPC UA without nodes": ({"EDGE_AGENT__SOURCES": '["opcua"]'}, "EDGE_OPCUA__NODES"),
    "OPC UA default security without certificate": (
        {"EDGE_AGENT__SOURCES": '["opcua"]', "EDGE_OPCUA__NODES": NODE},
        "EDGE_OPCUA__CERTIFICATE",
    ),
    "an OPC UA node of a signal no model knows": (
        {
            "EDGE_AGENT__SOURCES": '["opcua"]',
            "EDGE_OPCUA__NODES": NODE.replace('"temperature"}', '"temp"}'),
            "EDGE_OPCUA__SECURITY_POLICY": "None",
            "EDGE_OPCUA__ALLOW_INSECURE": "true",
        },
        "EDGE_OPCUA__NODES[0]",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_config_names_the_setting_at_fault(tmp_path: Path, case: str) -> None:
    env, setting = CASES[case]
    code, out = check_config(tmp_path, env)
    assert code != 0, out
    assert setting in out, out
    assert "Traceback" not in out, out


def test_a_valid_configuration_passes(tmp_path: Path) -> None:
    code, out = check_config(tmp_path, {})
    assert code == 0, out
    assert "configuration is valid" in out


def test_a_state_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out = check_config(tmp_path, {"EDGE_AGENT__STATE_DIR": str(blocker / "state")})
    assert code != 0, out
    assert "EDGE_AGENT__STATE_DIR" in out, out


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare(1)"
)
def test_a_read_only_state_directory_is_named(tmp_path: Path) -> None:
    """A read-only mount (as root, permissions would not stop the write)."""
    state = tmp_path / "state"
    state.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_")}
    script = (
        f'mount --bind "{state}" "{state}" && mount -o remount,ro,bind "{state}" && '
        f'exec "{sys.executable}" -m edge_agent.daemon.cli check-config'
    )
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        env=clean | {"EDGE_AGENT__STATE_DIR": str(state)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"EDGE_AGENT__STATE_DIR={state}" in out, out
    assert "Read-only file system" in out, out


def test_a_garbage_line_in_an_env_file_names_the_file_and_the_line(tmp_path: Path) -> None:
    env_file = tmp_path / "edge-agent.env"
    env_file.write_text("EDGE_MQTT__PORT=1884\nthis is not a setting\nEDGE_MQTT__HOST=broker\n")
    code, out = check_config(tmp_path, {}, "--env-file", str(env_file))
    assert code != 0, out
    assert f"{env_file}:2" in out, out
    assert "could not parse" not in out, out  # python-dotenv's own, nameless warning
