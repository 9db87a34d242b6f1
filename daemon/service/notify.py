"""The systemd notify protocol: READY, WATCHDOG, STATUS and STOPPING from the event loop.

Written here (a datagram to `$NOTIFY_SOCKET`, see sd_notify(3)) rather than taken from the
`sdnotify` package, which has been unmaintained since 2017 and does not know the watchdog
variables. Outside systemd (`NOTIFY_SOCKET` unset) every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited

log = structlog.get_logger(__name__)

# A STATUS= line longer than this is cut: systemctl shows one line, and a datagram has a cap.
MAX_STATUS = 200


def _address(raw: str) -> str | None:
    """The socket address: a path, or '@name' for the abstract namespace (leading NUL)."""
    if raw.startswith("@"):
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None  # vsock:... and other forms systemd may grow; we do not speak them


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Return systemd's watchdog timeout in seconds if it is meant for this process, else None."""
    env = os.environ if env is None else env
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        log.warning("WATCHDOG_USEC is not a number, watchdog off", value=env["WATCHDOG_USEC"])
        return None
    return usec / 1e6 if usec > 0 else None


class Notifier:
    """Send sd_notify messages; a no-op when `$NOTIFY_SOCKET` is unset or unusable."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET has an address form we do not support", value=raw)
        self._watchdog_s = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._limit = RateLimited(60.0)

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that listens."""
        return self._address is not None

    @property
    def watchdog_s(self) -> float | None:
        """The watchdog timeout systemd set for us (WatchdogSec=), if any."""
        return self._watchdog_s

    def send(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (counted, logged) if it failed."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never block the loop: a full receive queue loses this ping, the next one follows.
            self._sock.sendto("\n".join(assignments).encode(), socket.MSG_DONTWAIT, self._address)
        except OSError as exc:
            metrics.NOTIFY_ERRORS.inc()
            held = self._limit.allow("send")
            if held is not None:
                log.warning("sd_notify failed", error=str(exc), suppressed=held)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Tell systemd that start-up is complete (connectors up, model loaded)."""
        return self.send("READY=1", *([_status(status)] if status else []))

    def status(self, text: str) -> bool:
        """Set the one-line status `systemctl status` shows."""
        return self.send(_status(text))

    def stopping(self, status: str = "stopping") -> bool:
        """Tell systemd that shutdown has begun."""
        return self.send("STOPPING=1", _status(status))

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.send("WATCHDOG=1")

    async def run_watchdog(self, ratio: float = 0.5) -> None:
        """Ping every `ratio` of the watchdog timeout until cancelled.

        The pings come from the event loop itself, so a stalled loop stops them and systemd
        restarts the agent. Returns at once when systemd asked for no watchdog.
        """
        if self._watchdog_s is None or not self.enabled:
            return
        period = self._watchdog_s * ratio
        # systemd kills a stalled agent with SIGABRT: let it leave every thread's Python stack
        # on stderr (the journal), which says where the loop was stuck.
        faulthandler.enable()
        log.info("watchdog on", timeout_s=self._watchdog_s, period_s=period)
        while True:
            self.watchdog()
            await asyncio.sleep(period)

    async def run_status(self, summary: Callable[[], str], interval_s: float) -> None:
        """Send `summary()` as STATUS= every `interval_s` seconds until cancelled."""
        if not self.enabled:
            return
        while True:
            self.status(summary())
            await asyncio.sleep(interval_s)

    def close(self) -> None:
        """Close the socket (the next send opens it again)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    line = " ".join(text.split())  # one line: newlines would start a new assignment
    return f"STATUS={line[:MAX_STATUS]}"


def install_debug_stall(loop: asyncio.AbstractEventLoop, seconds: float) -> bool:
    """Debug hook: on SIGUSR2 block the event loop for `seconds` (to test the watchdog).

    Only installed when `EDGE_SERVICE__DEBUG_STALL_S` > 0; returns whether it was.
    """
    if seconds <= 0:
        return False

    def stall() -> None:
        log.warning("debug stall: blocking the event loop", seconds=seconds)
        time.sleep(seconds)  # the point: nothing else on the loop runs meanwhile
        log.warning("debug stall over")

    loop.add_signal_handler(signal.SIGUSR2, stall)
    log.warning("debug stall hook armed (SIGUSR2)", seconds=seconds)
    return True
