"""Retention's messages: evidence requests and replies, and history digests (JSON).

A request is `{"id", "correlation"}` on the request topic. Every request gets exactly one reply
on the response topic: `{"id", "correlation", "status": "ok", "evidence"}`, or
`{"id", "correlation", "status": "error", "error", "message"}` where `error` says why
(`unknown`, `expired`, `evicted`, `lost`, `pending`, `unreadable`; `bad_request`, without id
and correlation, when the request does not decode). Records triggered with `publish` go out
unasked as the same ok reply. A digest carries one asset's retained history, per signal the
bound it was retained under and its points in time order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import numpy as np
import structlog

from edge_agent.core.readings import Outgoing, Priority, new_id
from edge_agent.daemon.retention.evidence import (
    Evidence,
    EvidenceError,
    EvidenceNotFoundError,
    EvidencePendingError,
)
from edge_agent.daemon.retention.history import Block
from edge_agent.daemon.retention.settings import RetentionSettings

log = structlog.get_logger(__name__)


class _Request(msgspec.Struct):
    id: str
    correlation: str | None = None


class Messages:
    """The topics and payloads of one gateway's retention messages."""

    def __init__(self, settings: RetentionSettings, gateway: str) -> None:
        self.gateway = gateway
        self.request_topic = settings.request_topic.format(gateway=gateway)
        self.response_topic = settings.response_topic.format(gateway=gateway)
        self._digest_topic = settings.digest_topic

    def answer(self, payload: bytes, lookup: Callable[[str], Evidence]) -> Outgoing:
        """The reply to one request: the record `lookup` finds, or why there is none."""
        try:
            req = msgspec.json.decode(payload, type=_Request)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._reply({"status": "error", "error": "bad_request", "message": str(exc)})
        try:
            ev = lookup(req.id)
        except EvidenceNotFoundError as exc:
            return self._error(req, exc.why, exc)
        except EvidencePendingError as exc:
            return self._error(req, "pending", exc)
        except EvidenceError as exc:
            log.exception("evidence_unreadable", id=req.id, error=str(exc))
            return self._error(req, "unreadable", exc)
        return self.record(req.id, ev, req.correlation)

    def record(self, evidence_id: str, ev: Evidence, correlation: str | None = None) -> Outgoing:
        """The ok reply that carries one record (STATUS priority, as every reply)."""
        body = {
            "id": evidence_id,
            "correlation": correlation,
            "status": "ok",
            "evidence": ev.to_builtins(),
        }
        return self._reply(body, evidence_id)

    def digest(self, asset: str, blocks: list[Block]) -> Outgoing:
        """One asset's history blocks as a DIGEST-priority message."""
        return Outgoing(
            topic=self._digest_topic.format(gateway=self.gateway, asset=asset),
            payload=digest_payload(self.gateway, asset, blocks),
            msg_id=new_id(),
            key=f"digest/{asset}",
            priority=Priority.DIGEST,
        )

    def _error(self, req: _Request, error: str, exc: EvidenceError) -> Outgoing:
        head = {"id": req.id, "correlation": req.correlation}
        return self._reply({**head, "status": "error", "error": error, "message": str(exc)})

    def _reply(self, body: Mapping[str, object], evidence_id: str = "") -> Outgoing:
        return Outgoing(
            topic=self.response_topic,
            payload=msgspec.json.encode(body),
            msg_id=new_id(),
            key=f"evidence/{evidence_id}" if evidence_id else "",
            priority=Priority.STATUS,
        )


def digest_payload(gateway: str, asset: str, blocks: list[Block]) -> bytes:
    """JSON digest of one asset: per signal, its bound and retained points in time order."""
    signals: dict[str, dict[str, object]] = {}
    for name in dict.fromkeys(b.signal for b in blocks):
        mine = [b for b in blocks if b.signal == name]
        signals[name] = {
            "deviation": max(b.deviation for b in mine),
            "ts": np.concatenate([b.ts for b in mine]).tolist(),
            "value": np.concatenate([b.values for b in mine]).tolist(),
        }
    return msgspec.json.encode({"gateway": gateway, "asset": asset, "signals": signals})
