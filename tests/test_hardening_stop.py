"""The bound on the whole stop (issue 13): a task that swallows its cancellation cannot keep a
process alive past EDGE_AGENT__SHUTDOWN_TIMEOUT_S + GRACE_S after SIGTERM; it is named."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from edge_agent.daemon.service.stopping import GRACE_S
from tests.agent_proc import ROOT

STUBBORN = """
import asyncio, signal
from edge_agent.core import logs
from edge_agent.daemon.service.stopping import stop_handler

async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            continue  # the bug this guards against: a cancellation swallowed

async def main() -> None:
    logs.configure("info", "json")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop_handler(loop, stop, 1.0))
    task = asyncio.create_task(stubborn(), name="stubborn")
    print("ready", flush=True)
    await stop.wait()
    task.cancel()
    await task  # never returns

asyncio.run(main())
"""


def test_a_stop_that_overruns_its_bound_names_the_task_and_exits() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUBBORN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    _, err = proc.communicate()
    assert code == 1, err
    assert 1.0 + GRACE_S - 0.5 <= took < 1.0 + GRACE_S + 3, took
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    overran = [x for x in lines if x["event"] == "stop_overran"]
    assert overran, err
    assert "stubborn" in overran[0]["still_running"]
