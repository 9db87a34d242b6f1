"""The container image as `make image` builds it: inspected, and run where podman can't run it.

Only `make image` runs these (it sets IMAGE_UNDER_TEST after building); `make test` skips
them. `podman run` needs what these machines lack, so the image's file system is taken from
a created (never started) container with `podman mount`, and the agent runs in it under
chroot as the image's own user, with the image's environment, entry point and command: the
health check the image declares must then pass against the running agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.simulator.broker import Broker

IMAGE = os.environ.get("IMAGE_UNDER_TEST", "")
PODMAN = ["podman", "--storage-driver", "vfs"]
UID = 10001

pytestmark = pytest.mark.skipif(not IMAGE, reason="run by `make image` (IMAGE_UNDER_TEST)")


def podman(*args: str) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The image's configuration (docker format: it keeps HEALTHCHECK)."""
    (inspected,) = json.loads(podman("image", "inspect", IMAGE))
    check = inspected.get("Healthcheck") or inspected["Config"].get("Healthcheck")
    return dict(inspected["Config"]) | {"Healthcheck": check}


@pytest.fixture(scope="module")
def rootfs() -> Iterator[Path]:
    """The file system of a container made from the image (created, never started)."""
    if os.geteuid() != 0:
        pytest.skip("chroot into the image needs root (run `make image` as root or with sudo)")
    name = f"edge-agent-test-{uuid.uuid4().hex[:8]}"
    podman("create", "--name", name, IMAGE)
    try:
        yield Path(podman("mount", name))
    finally:
        subprocess.run([*PODMAN, "umount", name], capture_output=True, check=False)
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, check=False)


def image_env(config: dict[str, Any], **extra: str) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in config["Env"])
    return env | {"HOME": "/var/lib/edge-agent"} | extra


def in_image(
    root: Path, config: dict[str, Any], argv: list[str], **env: str
) -> subprocess.Popen[str]:
    """Start `argv` inside the image's file system as its user, in its working directory."""
    user = config["User"]
    workdir = config["WorkingDir"]
    script = f"cd {shlex.quote(workdir)} && exec {shlex.join(argv)}"
    return subprocess.Popen(
        ["chroot", f"--userspec={user}", str(root), "/bin/sh", "-c", script],
        env=image_env(config, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_in_image(root: Path, config: dict[str, Any], argv: list[str], **env: str) -> str:
    proc = in_image(root, config, argv, **env)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_the_image_runs_the_agent_as_an_unprivileged_user(config: dict[str, Any]) -> None:
    assert config["User"] == "edge-agent:edge-agent"
    assert config["Entrypoint"] == ["edge-agent"]
    assert config["Cmd"] == ["run"]
    assert config["WorkingDir"] == "/var/lib/edge-agent"
    assert "/var/lib/edge-agent" in config["Volumes"]
    assert "9108/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] == "SIGTERM"
    env = image_env(config)
    assert env["PATH"].startswith("/opt/edge-agent/bin:")
    assert env["EDGE_AGENT__STATE_DIR"] == "/var/lib/edge-agent"


def test_the_image_declares_a_health_check_on_health(config: dict[str, Any]) -> None:
    check = config["Healthcheck"]
    assert check, "no HEALTHCHECK (an OCI-format build drops it: build with --format docker)"
    assert check["Test"][0] == "CMD"
    assert "/health" in " ".join(check["Test"])
    assert check["Interval"] > 0
    assert check["StartPeriod"] > 0


def test_the_user_owns_its_state_and_nothing_else(rootfs: Path) -> None:
    passwd = (rootfs / "etc" / "passwd").read_text()
    entry = next(line for line in passwd.splitlines() if line.startswith("edge-agent:"))
    assert entry.split(":")[2:4] == [str(UID), str(UID)]
    state = (rootfs / "var" / "lib" / "edge-agent").stat()
    assert (state.st_uid, state.st_mode & 0o777) == (UID, 0o700)
    assert (rootfs / "opt" / "edge-agent" / "bin" / "edge-agent").stat().st_uid == 0


def test_the_package_imports_in_the_images_python(config: dict[str, Any], rootfs: Path) -> None:
    code = (
        "import edge_agent.daemon.app, edge_agent.connectors.sparkplug, edge_agent.connectors.uns;"
        "from edge_agent.connectors.sparkplug_session import decode, rebirth_payload;"
        "print(decode(rebirth_payload(1)).metrics[0].name)"
    )
    out = run_in_image(rootfs, config, ["python", "-c", code])
    assert out.strip().splitlines()[-1] == "Node Control/Rebirth"
    run_in_image(rootfs, config, ["edge-agent", "check-config"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_entry_point_runs_and_the_health_check_passes(
    config: dict[str, Any], rootfs: Path, broker: Broker
) -> None:
    port = str(_free_port())
    env = {
        "EDGE_MQTT__HOST": broker.host,
        "EDGE_MQTT__PORT": str(broker.port),
        "EDGE_AGENT__GATEWAY_ID": "image-test",
        "EDGE_SERVICE__HTTP_PORT": port,
    }
    check = config["Healthcheck"]["Test"][1:]  # after "CMD"
    agent = in_image(rootfs, config, [*config["Entrypoint"], *config["Cmd"]], **env)
    try:
        deadline = time.monotonic() + 120
        while True:
            probe = in_image(rootfs, config, check, **env)
            out, _ = probe.communicate(timeout=30)
            if probe.returncode == 0:
                break
            assert agent.poll() is None, agent.communicate()[0]
            assert time.monotonic() < deadline, out
            time.sleep(1.0)
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=60)
        assert agent.returncode == 0, out
        assert '"agent running"' in out
    finally:
        with contextlib.suppress(ProcessLookupError):
            agent.kill()
