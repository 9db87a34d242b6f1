"""Incidents and their journal on disk, so a report outlives the agent's memory.

An incident is one fault of one asset under one rule: its first raise opens it (and names it),
escalations and re-raises while it is open update it, the `resolved` closes it, each with
why. Every change appends the incident's whole state as one JSON line to
`<state_dir>/incidents.jsonl` (no fsync: a lost line costs a report's timeline, never a
recommendation, which the outbox keeps). Past `MAX_BYTES` the file is rewritten with the
latest line of the last `MAX_INCIDENTS` incidents. A write that fails is logged and counted,
never raised: the page must not stop the pipeline.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited

log = structlog.get_logger(__name__)

FILE = "incidents.jsonl"
MAX_INCIDENTS = 256
MAX_BYTES = 4 * 2**20
# What a recommendation keeps in an incident's timeline (the rest is in the uplink copy).
_DROP = ("schema", "gateway", "asset_meta", "window_end")


def compact(rec: dict[str, object]) -> dict[str, object]:
    """A recommendation without the fields every message repeats."""
    return {k: v for k, v in rec.items() if k not in _DROP}


def _text(rec: dict[str, object], key: str) -> str:
    value = rec.get(key)
    return value if isinstance(value, str) else ""


def _versions(rec: dict[str, object]) -> str:
    model, pack = rec.get("model"), rec.get("rule_pack")
    m = model if isinstance(model, dict) else {}
    p = pack if isinstance(pack, dict) else {}
    return f"model {m.get('name', '?')} v{m.get('version', '?')}, rules v{p.get('version', '?')}"


@dataclass
class Incident:
    """One fault of one asset under one rule, from its first raise to its resolution."""

    id: str
    asset: str
    rule_id: str
    title: str
    severity: str
    opened: float  # event time of the raising window
    onset: float  # start of the anomaly span: first anomalous window minus one window
    status: str = "open"  # open or resolved
    closed: float | None = None
    why_closed: str = ""
    baselines: dict[str, float] = field(default_factory=dict)
    evidence_ids: list[str] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)

    @classmethod
    def open(cls, rec: dict[str, object], onset: float, baselines: dict[str, float]) -> Incident:
        """A new incident from its first raise."""
        ts = rec.get("window_ts")
        inc = cls(
            id=str(rec.get("id")),
            asset=str(rec.get("asset")),
            rule_id=str(rec.get("rule_id")),
            title=_text(rec, "title"),
            severity=str(rec.get("severity")),
            opened=float(ts) if isinstance(ts, int | float) else 0.0,
            onset=onset,
            baselines=baselines,
        )
        inc.add("raised", rec, _text(rec, "explanation"))
        return inc

    def update(self, rec: dict[str, object]) -> None:
        """A raise while open: an escalation, or a re-raise (a live update restarts rules)."""
        severity = str(rec.get("severity"))
        if rec.get("escalated_from"):
            why = f"escalated from {rec['escalated_from']} to {severity}"
        else:
            why = f"raised again by {_versions(rec)} (the rule state restarted)"
        self.severity, self.title = severity, _text(rec, "title") or self.title
        self.add("updated", rec, why)

    def close(self, rec: dict[str, object]) -> None:
        """The `resolved` for this incident: say why it closed."""
        ts = rec.get("window_ts")
        self.status = "resolved"
        self.closed = float(ts) if isinstance(ts, int | float) else None
        self.why_closed = _text(rec, "explanation") or _text(rec, "title")
        self.add("resolved", rec, self.why_closed)

    def add(self, kind: str, rec: dict[str, object], why: str) -> None:
        """Append one timeline event (and its evidence id)."""
        evidence = rec.get("evidence_id")
        if isinstance(evidence, str) and evidence not in self.evidence_ids:
            self.evidence_ids.append(evidence)
        self.events.append(
            {"kind": kind, "ts": rec.get("window_ts"), "why": why, "rec": compact(rec)}
        )

    def raise_ids(self) -> list[str]:
        """The ids of every raise (first, escalations, re-raises) of this incident."""
        return [
            str(rec.get("id"))
            for e in self.events
            if e.get("kind") != "resolved" and isinstance(rec := e.get("rec"), dict)
        ]

    def summary(self) -> dict[str, object]:
        """What the page's incident list shows."""
        return {
            "id": self.id,
            "asset": self.asset,
            "rule_id": self.rule_id,
            "title": self.title,
            "severity": self.severity,
            "status": self.status,
            "opened": self.opened,
            "closed": self.closed,
            "why_closed": self.why_closed,
            "evidence_ids": self.evidence_ids,
            "events": [{k: e[k] for k in ("kind", "ts", "why")} for e in self.events],
        }

    def to_dict(self) -> dict[str, object]:
        """The whole incident, JSON-ready."""
        return asdict(self)


_decoder = msgspec.json.Decoder(Incident)


class Journal:
    """The incidents file of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE
        self._limit = RateLimited(60.0)
        try:
            self._size = self.path.stat().st_size
        except OSError:
            self._size = 0

    def write(self, inc: Incident) -> None:
        """Append the incident's current state; compact the file when it grew too big."""
        line = msgspec.json.encode(inc) + b"\n"
        try:
            with self.path.open("ab") as f:
                f.write(line)
            self._size += len(line)
            if self._size > MAX_BYTES:
                self._compact()
        except OSError as exc:
            metrics.WEB_DROPPED.labels("journal").inc()
            if (held := self._limit.allow("write")) is not None:
                log.warning(
                    "incident journal not written; reports will lack this timeline",
                    path=str(self.path),
                    error=str(exc),
                    suppressed=held,
                )

    def _compact(self) -> None:
        latest = list(self._latest().values())[-MAX_INCIDENTS:]
        tmp = self.path.with_suffix(".tmp")
        data = b"".join(msgspec.json.encode(i) + b"\n" for i in latest)
        tmp.write_bytes(data)
        tmp.replace(self.path)
        self._size = len(data)

    def _lines(self) -> Iterator[Incident]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("incident journal unreadable", path=str(self.path), error=str(exc))
            return
        for line in raw.splitlines():
            try:
                yield _decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a line cut by a crash: that incident's previous state stands

    def _latest(self) -> OrderedDict[str, Incident]:
        out: OrderedDict[str, Incident] = OrderedDict()
        for inc in self._lines():
            out[inc.id] = inc
        return out

    def load(self) -> list[Incident]:
        """The last `MAX_INCIDENTS` incidents, as they were last written.

        Those open at the last stop stay open: the advisor keeps its rule state across a
        restart (rules/state.py), so their resolution will name the raise they hold.
        """
        return list(self._latest().values())[-MAX_INCIDENTS:]

    def find(self, evidence_id: str) -> Incident | None:
        """The latest state of the incident that holds this evidence id."""
        found = None
        for inc in self._lines():
            if evidence_id in inc.evidence_ids:
                found = inc
        return found
