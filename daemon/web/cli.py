"""`edge-agent report <evidence-id>`: an incident's report as one self-contained HTML file.

Reads the evidence record and the incident journal from the agent's state directory (the
agent may be running: both are only read), renders the same report the page serves, and
writes it where `--out` says. The file references nothing outside itself.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import msgspec

from edge_agent.core.errors import EdgeAgentError
from edge_agent.daemon.retention.evidence import SUFFIX, decode
from edge_agent.daemon.web.journal import Journal
from edge_agent.daemon.web.report import render_report

_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


class ReportError(EdgeAgentError):
    """No report can be made for this evidence id."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `report` subcommand."""
    p = sub.add_parser(
        "report", help="write an incident report (one self-contained HTML file) for an evidence id"
    )
    p.add_argument("evidence_id", metavar="EVIDENCE-ID", help="the evidence_id of a recommendation")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write it (default: report-<EVIDENCE-ID>.html here; - for stdout)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the agent's state directory (default: EDGE_AGENT__STATE_DIR from the settings)",
    )
    p.add_argument(
        "--env-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="read settings from this env file (repeatable)",
    )
    p.set_defaults(func=run_report)


def make_report(evidence_id: str, state_dir: Path, gateway: str = "") -> bytes:
    """The report's HTML; ReportError says why there is none."""
    if not _ID.match(evidence_id):
        raise ReportError(f"{evidence_id!r} is not an evidence id")
    path = state_dir / "evidence" / f"{evidence_id}{SUFFIX}"
    try:
        ev = decode(path.read_bytes())
    except FileNotFoundError as exc:
        raise ReportError(
            f"evidence {evidence_id}: no record at {path} (expired, evicted, still recording, "
            "or another state directory: --state-dir)"
        ) from exc
    except (OSError, ValueError, msgspec.DecodeError) as exc:
        raise ReportError(f"evidence {evidence_id}: {path} is unreadable: {exc}") from exc
    return render_report(ev, Journal(state_dir).find(evidence_id), gateway)


def run_report(args: argparse.Namespace) -> int:
    """Write the report; exit 0, or 1 with one line saying why not."""
    from edge_agent.daemon.app import gateway_id  # noqa: PLC0415 - the settings only when needed
    from edge_agent.daemon.settings import load_settings  # noqa: PLC0415

    settings = load_settings(args.env_file)
    state_dir = args.state_dir or settings.agent.state_dir
    body = make_report(args.evidence_id, state_dir, gateway_id(settings))
    if str(args.out) == "-":
        sys.stdout.buffer.write(body)
        return 0
    out = args.out or Path(f"report-{args.evidence_id}.html")
    try:
        out.write_bytes(body)
    except OSError as exc:
        raise ReportError(f"--out {out}: cannot write: {exc}") from exc
    print(f"wrote {out} ({len(body) // 1024} KB): open it in any browser, offline")  # noqa: T201
    return 0
