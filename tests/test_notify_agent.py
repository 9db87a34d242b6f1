"""The real agent under a notify socket: READY after broker and model, watchdog, clean stop."""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.simulator.broker import Broker, free_port
from edge_agent.simulator.plant import PumpStream
from tests.agent_proc import AgentProcess, Listener

START = 1_750_000_000.0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()


def _recv(sock: socket.socket, timeout_s: float) -> str | None:
    if not select.select([sock], [], [], timeout_s)[0]:
        return None
    return sock.recv(4096).decode()


def _wait_for(sock: socket.socket, key: str, agent: AgentProcess, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = _recv(sock, 0.5)
        if msg is not None and key in msg.splitlines():
            return msg
        assert agent.proc is not None
        assert agent.proc.poll() is None, f"agent exited:\n{agent.log_text()}"
    raise AssertionError(f"no {key} within {timeout_s}s:\n{agent.log_text()}")


def _drain(sock: socket.socket) -> list[str]:
    got = []
    while (msg := _recv(sock, 0)) is not None:
        got.append(msg)
    return got


def _collect(sock: socket.socket, seconds: float) -> list[str]:
    """Everything that arrives within `seconds` (and what was already queued)."""
    deadline = time.monotonic() + seconds
    got = _drain(sock)
    while (left := deadline - time.monotonic()) > 0:
        msg = _recv(sock, left)
        if msg is not None:
            got.append(msg)
    return got


def _health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _agent(broker: Broker, tmp_path: Path, path: str, **env: str) -> tuple[AgentProcess, int]:
    port = free_port()
    agent = AgentProcess(
        broker,
        tmp_path / "state",
        env={"NOTIFY_SOCKET": path, "EDGE_SERVICE__HTTP_PORT": str(port), **env},
    )
    return agent, port


def test_watchdog_pings_stop_while_a_debug_hook_blocks_the_loop(
    broker: Broker, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    agent, port = _agent(
        broker, tmp_path, path, WATCHDOG_USEC="400000", EDGE_SERVICE__DEBUG_STALL_S="3"
    )
    agent.start()
    try:
        _wait_for(sock, "READY=1", agent)
        health = _health(port)  # the model is loaded (the broker: test_ready_waits_for_the_broker)
        assert health["ready"] is True
        assert health["backend"]
        for _ in range(3):  # pings every 0.2 s
            _wait_for(sock, "WATCHDOG=1", agent, timeout_s=10)

        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGUSR2)  # the debug hook blocks the loop for 3 s
        agent.wait_for_log("debug stall: blocking the event loop")
        _drain(sock)  # what was sent before the stall
        time.sleep(1.0)
        during = _drain(sock)
        stalled = not any(x.get("event") == "debug stall over" for x in agent.lines)
        assert stalled, "the check ran after the stall ended: inconclusive"
        assert not [m for m in during if "WATCHDOG=1" in m.splitlines()], during

        agent.wait_for_log("debug stall over")
        _wait_for(sock, "WATCHDOG=1", agent, timeout_s=10)  # pings resume
    finally:
        agent.kill()


def test_ready_waits_for_the_broker(
    broker: Broker, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    broker.stop()  # the broker is down when the agent starts
    agent, port = _agent(broker, tmp_path, path, EDGE_MQTT__CONNECT_TIMEOUT_S="60")
    agent.start()
    try:
        agent.wait_for_log("model loaded")
        early = [m for m in _collect(sock, 2.0) if "READY=1" in m.splitlines()]
        assert not early, "READY=1 before the broker was reachable"
        broker.start()
        _wait_for(sock, "READY=1", agent)
        connected = _health(port)["connected"]
        assert isinstance(connected, dict)
        assert connected
        assert all(connected.values()), connected
    finally:
        agent.kill()


def test_sigterm_while_readings_flow_exits_zero_and_says_stopping(
    broker: Broker, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    agent, _ = _agent(broker, tmp_path, path, EDGE_AGENT__SHUTDOWN_TIMEOUT_S="5")
    listener = Listener(broker, "edge-agent/gw-test/#")
    stop_feed = threading.Event()

    def feed() -> None:
        pump = PumpStream("pump-1", seed=7, start_ts=START)
        while not stop_feed.is_set():
            batch = []
            for _ in range(10):
                ts, values = pump.step()
                batch.append({"ts": ts, **values})
            listener.publish("plant/pump-1/telemetry", json.dumps(batch).encode())

    feeder = threading.Thread(target=feed, daemon=True)
    agent.start()
    try:
        _wait_for(sock, "READY=1", agent)
        feeder.start()
        time.sleep(1.0)  # readings are flowing
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        _wait_for(sock, "STOPPING=1", agent, timeout_s=10)
        # Within the shutdown timeout (5 s) plus the time to close connections.
        assert agent.proc.wait(15) == 0, agent.log_text()
    finally:
        stop_feed.set()
        feeder.join(10)
        agent.kill()
        time.sleep(0.5)
        received = listener.drain()
        listener.close()
    payloads = [p.decode(errors="replace") for _, p in received]
    assert any("offline" in p for p in payloads), payloads[-5:]
