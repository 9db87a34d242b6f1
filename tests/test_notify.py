"""sd_notify against a real AF_UNIX datagram socket, path and abstract namespace."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.core import metrics
from edge_agent.daemon.service.notify import MAX_STATUS, Notifier, watchdog_interval


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def _drain(sock: socket.socket) -> list[str]:
    got = []
    while select.select([sock], [], [], 0)[0]:
        got.append(sock.recv(4096).decode())
    return got


def test_ready_status_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("connected, model loaded")
    assert sock.recv(4096) == b"READY=1\nSTATUS=connected, model loaded"
    assert n.status("line one\nline two")
    assert sock.recv(4096) == b"STATUS=line one line two"
    assert n.status("x" * 1000)
    assert sock.recv(4096) == b"STATUS=" + b"x" * MAX_STATUS
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
    n.close()


def test_abstract_namespace() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        n.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()


def test_unsupported_address_form_is_off() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_send_failure_is_counted(tmp_path: Path) -> None:
    before = metrics.NOTIFY_ERRORS._value.get()
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not n.ready()
    assert metrics.NOTIFY_ERRORS._value.get() == before + 1


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 2.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


async def test_watchdog_pings_stop_while_the_loop_is_blocked(
    listener: tuple[socket.socket, str],
) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # pings every 50 ms
    task = asyncio.create_task(n.run_watchdog(0.5))
    try:
        for _ in range(3):  # pings keep coming while the loop runs
            assert await asyncio.to_thread(sock.recv, 4096) == b"WATCHDOG=1"
        during: list[str] = []

        def block() -> None:
            _drain(sock)
            time.sleep(0.5)  # ten ping periods with the loop stuck
            during.extend(_drain(sock))

        blocked = asyncio.Event()

        def block_then_flag() -> None:
            block()
            blocked.set()

        asyncio.get_running_loop().call_soon(block_then_flag)
        await blocked.wait()
        assert during == []
        # The loop is free again: the pings resume.
        assert await asyncio.to_thread(sock.recv, 4096) == b"WATCHDOG=1"
    finally:
        task.cancel()
        n.close()


async def test_no_watchdog_requested_returns_at_once(listener: tuple[socket.socket, str]) -> None:
    _, path = listener
    await asyncio.wait_for(Notifier({"NOTIFY_SOCKET": path}).run_watchdog(), 5)


async def test_status_task_sends_the_summary(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    task = asyncio.create_task(n.run_status(lambda: "42 readings/s, outbox 0", 0.01))
    try:
        assert await asyncio.to_thread(sock.recv, 4096) == b"STATUS=42 readings/s, outbox 0"
    finally:
        task.cancel()
        n.close()


def test_watchdog_kill_leaves_the_stuck_stack_in_the_log(tmp_path: Path) -> None:
    # What systemd does to a loop that stopped pinging: SIGABRT. The log must say where.
    sock = tmp_path / "n.sock"
    script = (
        "import asyncio, time\n"
        "from edge_agent.daemon.service.notify import Notifier\n"
        "def stuck_in_a_callback():\n"
        "    print('stuck', flush=True)\n"
        "    time.sleep(60)\n"
        "async def main():\n"
        f"    n = Notifier({{'NOTIFY_SOCKET': {str(sock)!r}, 'WATCHDOG_USEC': '1000000'}})\n"
        "    asyncio.create_task(n.run_watchdog())\n"
        "    await asyncio.sleep(0.05)\n"
        "    stuck_in_a_callback()\n"
        "asyncio.run(main())\n"
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(sock))
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines: list[str] = []  # log lines may come first
            while (line := proc.stdout.readline()) not in ("stuck\n", "") and len(lines) < 20:
                lines.append(line)
            assert line == "stuck\n", lines
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGABRT
    assert "Fatal Python error: Aborted" in err
    assert "stuck_in_a_callback" in err
