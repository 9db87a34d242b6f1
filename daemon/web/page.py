"""The page's routes: /, /static/<file>, /api/state and /report/<evidence-id>.

Read-only, and idle until a browser asks: nothing here runs between requests. The static
files are read from the package on first use and kept (about 70 KB). `/api/state` is the one
the page polls; `since` (event time) keeps each poll to the points the page has not got.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from importlib import resources
from urllib.parse import parse_qs

import msgspec

from edge_agent.daemon.retention.evidence import (
    Evidence,
    EvidenceError,
    EvidenceNotFoundError,
    EvidencePendingError,
)
from edge_agent.daemon.service.http import Response
from edge_agent.daemon.web.journal import Journal
from edge_agent.daemon.web.observer import LiveState, Serving
from edge_agent.daemon.web.report import render_missing, render_report

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
}
_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_NO_STORE = (("Cache-Control", "no-store"),)
EvidenceLookup = Callable[[str], Evidence]  # raises EvidencePendingError / EvidenceError
Facts = Callable[[], Mapping[str, object]]  # health, gateway, versions: read per request


def static_file(name: str) -> bytes:
    """One file of the page's static assets (also inlined into reports)."""
    return (resources.files("edge_agent.daemon.web") / "static" / name).read_bytes()


class WebApp:
    """Answers the page's requests from the live state, the evidence store and the journal."""

    def __init__(
        self,
        state: LiveState,
        *,
        serving: Serving,
        facts: Facts,
        evidence: EvidenceLookup,
        journal: Journal | None = None,
        reading_age: Callable[[], float | None] = lambda: None,
        learning: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.state = state
        self._serving = serving
        self._facts = facts
        self._evidence = evidence
        self._journal = journal
        self._reading_age = reading_age
        self._learning = learning
        self._static: dict[str, bytes] = {}

    def __call__(self, path: str, query: str) -> Response | None:
        """Route one GET; None: not found."""
        if path in ("/", "/index.html"):
            return self._file("index.html")
        if path.startswith("/static/"):
            return self._file(path.removeprefix("/static/"))
        if path == "/api/state":
            return self._api_state(query)
        if path.startswith("/report/"):
            return self.report(path.removeprefix("/report/"), "download" in parse_qs(query))
        return None

    def _file(self, name: str) -> Response | None:
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in _TYPES:
            return None
        body = self._static.get(name)
        if body is None:
            try:
                body = static_file(name)
            except (FileNotFoundError, IsADirectoryError):
                return None
            self._static[name] = body
        return Response(200, _TYPES[suffix], body, (("Cache-Control", "max-age=300"),))

    def _api_state(self, query: str) -> Response:
        try:
            since = float(parse_qs(query).get("since", ["0"])[0])
        except ValueError:
            since = 0.0
        if not math.isfinite(since):
            since = 0.0
        body = self.state.snapshot(self._serving, since, self._reading_age(), self._learning())
        body |= self._facts()
        return Response(200, "application/json", msgspec.json.encode(body), _NO_STORE)

    def report(self, evidence_id: str, download: bool = False) -> Response:
        """The self-contained report of one evidence record (and its incident)."""
        if not _ID.match(evidence_id):
            return Response(404, "text/html; charset=utf-8", render_missing(evidence_id, "unknown"))
        incident = self.state.incident_of_evidence(evidence_id)
        if incident is None and self._journal is not None:
            incident = self._journal.find(evidence_id)
        gateway = str(self._facts().get("gateway", ""))
        try:
            ev = self._evidence(evidence_id)
        except EvidencePendingError as exc:
            # The post-trigger window is still being recorded: the page reloads itself.
            body = render_missing(evidence_id, str(exc), refresh_s=2)
            return Response(200, "text/html; charset=utf-8", body, _NO_STORE)
        except EvidenceNotFoundError as exc:
            return Response(404, "text/html; charset=utf-8", render_missing(evidence_id, str(exc)))
        except EvidenceError as exc:
            return Response(503, "text/html; charset=utf-8", render_missing(evidence_id, str(exc)))
        headers: tuple[tuple[str, str], ...] = _NO_STORE
        if download:
            disposition = f'attachment; filename="report-{evidence_id}.html"'
            headers += (("Content-Disposition", disposition),)
        body = render_report(ev, incident, gateway)
        return Response(200, "text/html; charset=utf-8", body, headers)
