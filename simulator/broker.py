"""A real mosquitto on a free loopback port, for the demo, tests and benchmarks."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# mosquitto 2.0 silently drops QoS 1 messages beyond max_queued_messages (default 1000) to a
# slow subscriber: every broker we start states its limits.
LIMITS = """\
max_queued_messages 1000000
max_queued_bytes 0
max_inflight_messages 100
message_size_limit 0
persistence false
"""


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process; `stop()` and `start()` keep the port (for outage tests)."""

    def __init__(self, port: int | None = None, extra_conf: str = "") -> None:
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="edge-mosq-"))
        self.conf = self._dir / "mosquitto.conf"
        self.log = self._dir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{LIMITS}{extra_conf}\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start mosquitto and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
                [MOSQUITTO, "-c", str(self.conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C on the demo must not kill the broker before the
                # agent has published `offline` and drained its outbox.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                msg = f"mosquitto exited: {self.log.read_text(errors='replace')[-2000:]}"
                raise RuntimeError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        msg = f"mosquitto did not listen on {self.port} within {timeout_s}s"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_broker(extra_conf: str = "") -> Iterator[Broker]:
    """Run a broker for the duration of a with-block."""
    broker = Broker(extra_conf=extra_conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
