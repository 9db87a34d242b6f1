"""The Unified Namespace: recommendations and asset states under the site's hierarchy.

The rules this module keeps:
- Each recommendation (raise, resolved, needs_review) also goes, as the same plain JSON, to
  `<path>/recommendation`: an event, so never retained.
- After each one, the asset's state goes to `<path>/state`, retained, so a subscriber that
  comes later still sees where every asset stands: `alert` while any rule's raise is open
  (each open raise listed, escalations replacing their rule's entry, `resolved` closing
  it), else `review` when the last word was a needs_review, else `normal`.
- `<path>` is EDGE_UNS__PATH filled in per asset (enterprise, site, and the asset's area and
  line from EDGE_UNS__ASSETS or the defaults). An asset whose name cannot be one topic
  level is left out of the namespace (counted, logged), never published somewhere else.
- The messages are `Outgoing`s the pipeline hands to the outbox with the uplink's, so they
  are delivered, ordered and kept across outages and restarts like every other message.
- The open raises of at most EDGE_UNS__MAX_ASSETS assets are kept; past it the least
  recently seen asset is forgotten (counted), and its next state starts from what follows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

import msgspec
import structlog
from prometheus_client import Counter

from edge_agent.connectors.settings import UnsSettings
from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing, Priority, new_id

log = structlog.get_logger(__name__)

UNS_SKIPPED = Counter(
    "edge_uns_skipped_total",
    "Recommendations not put into the Unified Namespace, by reason (asset_name: not one topic "
    "level, not_json: unreadable payload) and states forgotten (evicted: past max_assets).",
    ["reason"],
    registry=metrics.REGISTRY,
)
_BAD_LEVEL: Final = frozenset("/+#\x00")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class Namespace:
    """Turns the pipeline's recommendation messages into the namespace's messages."""

    def __init__(self, settings: UnsSettings, gateway_id: str) -> None:
        self._settings = settings
        self._gateway = gateway_id
        self._open: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._review: set[str] = set()
        self._limited = RateLimited(60.0)

    def path(self, asset: str) -> str | None:
        """The asset's node in the namespace; None when its name cannot be a topic level."""
        if not asset or _BAD_LEVEL.intersection(asset):
            return None
        s = self._settings
        place = s.assets.get(asset)
        area, line = (place.area, place.line) if place is not None else (s.area, s.line)
        return s.path.format(
            enterprise=s.enterprise,
            site=s.site,
            area=area,
            line=line,
            asset=asset,
            gateway=self._gateway,
        )

    def messages(self, recommendations: Sequence[Outgoing]) -> list[Outgoing]:
        """For each recommendation message: its event, then the asset's retained state."""
        out: list[Outgoing] = []
        for msg in recommendations:
            asset = msg.key
            path = self.path(asset)
            if path is None:
                self._skip("asset_name", asset)
                continue
            try:
                rec = _decode(msg.payload)
            except msgspec.DecodeError:
                self._skip("not_json", asset)
                continue
            if not isinstance(rec, dict):
                self._skip("not_json", asset)
                continue
            qos = self._settings.qos
            out.append(
                Outgoing(
                    f"{path}/recommendation",
                    msg.payload,
                    new_id(),
                    key=asset,
                    priority=msg.priority,
                    qos=qos,
                )
            )
            state = _encode(self._state(asset, rec))
            out.append(
                Outgoing(
                    f"{path}/state",
                    state,
                    new_id(),
                    key=asset,
                    priority=Priority.STATUS,
                    qos=qos,
                    retain=True,
                )
            )
        return out

    def _state(self, asset: str, rec: dict[str, Any]) -> dict[str, Any]:
        """Update what is open for the asset with one recommendation; its state now."""
        opened = self._open.get(asset)
        if opened is None:
            opened = self._open[asset] = {}
            if len(self._open) > self._settings.max_assets:
                gone, _ = self._open.popitem(last=False)
                self._review.discard(gone)
                UNS_SKIPPED.labels("evicted").inc()
        self._open.move_to_end(asset)
        kind = rec.get("kind")
        rule = str(rec.get("rule_id"))
        if kind == "raise":
            cause = rec.get("cause")
            opened[rule] = {
                "id": rec.get("id"),
                "rule_id": rec.get("rule_id"),
                "severity": rec.get("severity"),
                "title": rec.get("title"),
                "cause": cause.get("class") if isinstance(cause, dict) else None,
                "since": rec.get("window_end"),
            }
            self._review.discard(asset)
        elif kind == "resolved":
            if opened.pop(rule, None) is None:  # a withdrawn rule: find it by the raise's id
                for key, entry in list(opened.items()):
                    if entry["id"] == rec.get("resolves"):
                        del opened[key]
            self._review.discard(asset)
        elif kind == "needs_review":
            self._review.add(asset)
        state = "alert" if opened else "review" if asset in self._review else "normal"
        return {
            "asset": asset,
            "gateway": self._gateway,
            "state": state,
            "open": list(opened.values()),
            "last": {
                "id": rec.get("id"),
                "kind": kind,
                "title": rec.get("title"),
                "at": rec.get("window_end"),
            },
        }

    def _skip(self, reason: str, asset: str) -> None:
        UNS_SKIPPED.labels(reason).inc()
        held = self._limited.allow(reason)
        if held is not None:
            log.warning("uns_skipped", reason=reason, asset=asset, held_back=held)


def open_namespace(settings: UnsSettings, gateway_id: str) -> Namespace | None:
    """The namespace publisher, or None while EDGE_UNS__ENTERPRISE is empty (off)."""
    return Namespace(settings, gateway_id) if settings.enabled else None
