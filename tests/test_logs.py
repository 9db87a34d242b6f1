"""Logs: JSON lines when not on a terminal, readable console lines on one."""

from __future__ import annotations

import io
import json

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
