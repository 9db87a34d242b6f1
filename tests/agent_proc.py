"""Run the real agent as a subprocess, and talk to it over a real broker with paho."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.simulator.broker import Broker

ROOT = Path(__file__).resolve().parent.parent


class AgentProcess:
    """`edge-agent run` in a subprocess, its JSON log lines collected from stderr."""

    def __init__(
        self,
        broker: Broker,
        state_dir: Path,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EDGE_")} | {
            "EDGE_MQTT__HOST": broker.host,
            "EDGE_MQTT__PORT": str(broker.port),
            "EDGE_AGENT__STATE_DIR": str(state_dir),
            "EDGE_AGENT__GATEWAY_ID": "gw-test",
            "EDGE_LOG__FORMAT": "json",
            "EDGE_INGEST__QOS": "1",
            "EDGE_SERVICE__HTTP_PORT": "0",  # tests run side by side: never a fixed port
            **(env or {}),
        }
        self.args = args  # after `run`, e.g. ("--env-file", "site.env")
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[dict[str, Any]] = []
        self._new = threading.Condition()

    def start(self) -> None:
        """Start the agent; returns at once."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.daemon.cli", "run", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": line.rstrip(), "raw": True}
            with self._new:
                self.lines.append(event)
                self._new.notify_all()

    def wait_for_log(self, event: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait for a log line whose event is `event`."""
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                for line in self.lines:
                    if line.get("event") == event:
                        return line
                left = deadline - time.monotonic()
                assert self.proc is not None
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no log line {event!r}; got:\n{self.log_text()}")
                self._new.wait(min(left, 0.2))

    def log_text(self) -> str:
        """The log so far, one JSON line each."""
        with self._new:
            return "\n".join(json.dumps(x) for x in self.lines[-200:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the agent and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        """Make sure the process is gone (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Listener:
    """A paho client on its own thread that records messages on some topics."""

    def __init__(self, broker: Broker, *filters: str, session: str = "") -> None:
        """Subscribe to `filters`; with a `session` name, one the broker keeps while it is away.

        A kept session (MQTT 5, not clean, 10 minutes) on a broker that persists its sessions
        across its restart gets what was published while it reconnected, as a real upstream
        subscriber must: a broker drops a message nobody is subscribed to.
        """
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        if session:
            self.client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=session, protocol=MQTTProtocolVersion.MQTTv5
            )
            self.client.reconnect_delay_set(1, 1)
        else:
            self.client = paho.Client(CallbackAPIVersion.VERSION2)
        ready = threading.Event()
        subacks = threading.Semaphore(0)

        def on_connect(client: paho.Client, *_: object) -> None:
            for f in filters:
                client.subscribe(f, qos=1)
            ready.set()

        def on_subscribe(*_: object) -> None:
            subacks.release()

        def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
            self.messages.put((msg.topic, bytes(msg.payload)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        if session:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 600
            self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        else:
            self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(10), "listener could not connect"
        for f in filters:  # every SUBACK has landed before anything is published
            assert subacks.acquire(timeout=10), f"no SUBACK for {f}"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish and wait until the broker has it."""
        self.client.publish(topic, payload, qos=qos).wait_for_publish(10)

    def drain(self) -> list[tuple[str, bytes]]:
        """Everything received so far."""
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Disconnect and stop the thread."""
        self.client.disconnect()
        self.client.loop_stop()
