"""structlog set-up: JSON lines when not on a terminal, readable console output on one."""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal

if "structlog" in sys.modules or "rich" in sys.modules:  # imported already: nothing to save
    import structlog
else:
    # structlog.dev and structlog.tracebacks import rich when it is installed (CEL and typer
    # bring it in): ~4.7 MB resident for pretty tracebacks the agent never renders (its
    # console lines use plain tracebacks, below). While structlog initialises, `import rich`
    # fails as for a package that is not installed; afterwards the name is free again, so an
    # explicit `import rich` (CEL's command line) still loads it. The agent's packages import
    # this module before structlog (daemon/__init__.py, tests/test_logs.py checks).
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog
    finally:
        if sys.modules.get("rich", 0) is None:
            del sys.modules["rich"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


def configure(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: object = None
) -> None:
    """Configure structlog for the whole process; logs go to stderr (journald under systemd)."""
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and getattr(out, "isatty", lambda: False)())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
        if console
        else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (asyncua, paho) log through the standard library: their records
    # are rendered by the same processors, so a JSON journal gets JSON lines from them too.
    handler = logging.StreamHandler(out)  # type: ignore[arg-type]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(_LEVELS[level], logging.WARNING))


class RateLimited:
    """Let one log line per key through per interval; counts what it held back."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """Return the number of suppressed lines since the last one if a line may go out now."""
        now = time.monotonic()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self._interval
        return self._held.pop(key, 0)
