"""The Dockerfile: its HEALTHCHECK really reads /health, and its shape is the one we promise."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from edge_agent.daemon.service.http import Health, HttpEndpoint
from edge_agent.daemon.service.settings import ServiceSettings

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _healthcheck_argv() -> list[str]:
    [check] = [rest for word, rest in _instructions() if word == "HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD") + 3 :])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def _run_check(port: int) -> int:
    env = os.environ | {"EDGE_SERVICE__HTTP_PORT": str(port)}
    return subprocess.run(_healthcheck_argv(), env=env, capture_output=True, check=False).returncode


async def test_healthcheck_fails_until_ready_then_passes() -> None:
    state = {"ready": False}
    async with HttpEndpoint(
        ServiceSettings(http_port=0), lambda: Health(ready=state["ready"])
    ) as ep:
        assert ep.port
        assert await asyncio.to_thread(_run_check, ep.port) != 0
        state["ready"] = True
        assert await asyncio.to_thread(_run_check, ep.port) == 0
        port = ep.port
    assert await asyncio.to_thread(_run_check, port) != 0  # nobody listening


def test_dockerfile_shape() -> None:
    ins = _instructions()
    words = [w for w, _ in ins]
    assert words.count("FROM") == 2  # build stage and a clean runtime stage
    assert any("pip install ." in rest for w, rest in ins if w == "RUN")
    [user] = [rest for w, rest in ins if w == "USER"]
    assert not user.startswith(("root", "0"))
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    [volume] = [rest for w, rest in ins if w == "VOLUME"]
    env = " ".join(rest for w, rest in ins if w == "ENV")
    match = re.search(r"EDGE_AGENT__STATE_DIR=(\S+)", env)
    assert match is not None
    assert json.loads(volume) == [match.group(1)]
    assert "slim" in next(rest for w, rest in ins if w == "ARG")
