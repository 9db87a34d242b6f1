"""Stopping on time: SIGTERM always ends the agent, whatever a task does with its cancellation.

The ordered stop (stop intake, flush, drain, disconnect, close) is bounded piece by piece;
this is the bound on the whole. The first SIGTERM or SIGINT starts it and arms a deadline
of EDGE_AGENT__SHUTDOWN_TIMEOUT_S plus `GRACE_S`: past it, the agent logs the tasks still
running (the ones to fix) and exits with status 1, so systemd's `Restart=on-failure` and
the outbox's file take over, instead of a process that answers /health and does nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

log = structlog.get_logger(__name__)

GRACE_S: Final = 4.0  # beyond shutdown_timeout_s: the disconnects and closes after the drain


def stop_handler(
    loop: asyncio.AbstractEventLoop, stop: asyncio.Event, shutdown_timeout_s: float
) -> Callable[[], None]:
    """The SIGTERM/SIGINT handler: set `stop`, and the first time arm the deadline."""
    limit_s = shutdown_timeout_s + GRACE_S

    def handler() -> None:
        if not stop.is_set():
            loop.call_later(limit_s, overran, limit_s)
        stop.set()

    return handler


def overran(limit_s: float) -> None:
    """The stop took longer than its bound: name what still runs, and exit now."""
    running = sorted(t.get_name() for t in asyncio.all_tasks() if not t.done())
    log.error(
        "stop_overran",
        limit_s=limit_s,
        still_running=running,
        action="exiting now; what the outbox holds on disk is sent after the next start",
    )
    sys.stderr.flush()
    os._exit(1)


async def wait_or_stop(aw: Awaitable[object], stop: asyncio.Event, timeout_s: float) -> None:
    """Wait for `aw` until it is done, `stop` is set or `timeout_s` passed, whichever first."""
    work = asyncio.ensure_future(aw)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([work, stopped], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (work, stopped):
            fut.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)
