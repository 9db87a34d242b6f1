"""Logs: JSON lines when not on a terminal, readable console lines on one."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import structlog

from edge_agent.core import logs


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    logs.configure("info", "auto", stream=out)
    structlog.get_logger("t").info("recommendation", asset="pump-3", kind="raise")
    structlog.get_logger("t").debug("hidden at info")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "recommendation"
    assert event["asset"] == "pump-3"
    assert event["level"] == "info"
    assert "timestamp" in event


def test_console_lines_on_a_terminal() -> None:
    out = _Tty()
    logs.configure("debug", "auto", stream=out)
    structlog.get_logger("t").warning("reading rejected", asset="pump-1", reason="not_json")
    text = out.getvalue()
    assert "reading rejected" in text
    assert "asset=pump-1" in text
    assert not text.lstrip().startswith("{")


def test_rate_limited_counts_what_it_held_back() -> None:
    limit = logs.RateLimited(3600.0)
    assert limit.allow("not_json") == 0
    assert limit.allow("not_json") is None
    assert limit.allow("not_json") is None
    assert limit.allow("too_large") == 0


def test_the_agent_imports_structlog_without_rich() -> None:
    """rich (~4.7 MB resident, there for CEL's command line) stays out of the agent."""
    probe = textwrap.dedent(
        """
        import json, sys
        import edge_agent.daemon.app
        import structlog.dev
        before = "rich" in sys.modules
        import rich.console  # the name is free again: whoever asks for rich gets it
        print(json.dumps([before, structlog.dev.rich is None, "rich.console" in sys.modules]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.splitlines()[-1]) == [False, True, True]


def test_console_lines_show_a_plain_traceback() -> None:
    out = _Tty()
    logs.configure("info", "console", stream=out)
    try:
        raise ValueError("window of the wrong shape")  # noqa: TRY301
    except ValueError:
        structlog.get_logger("t").exception("model backend failed", backend="onnx:cpu")
    text = out.getvalue()
    assert "backend=onnx:cpu" in text
    assert "Traceback (most recent call last)" in text
    assert "ValueError: window of the wrong shape" in text
