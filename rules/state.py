"""Rule state that outlives the process: open incidents, cooldowns, open reviews.

Without it a restart mid-incident raised the same fault again under a new id, and its
`resolved` could never name the raise operators saw. The advisor hands its state here
whenever a window produced a recommendation (`save`) and asks for an asset's saved state
when it first sees the asset (`restore`); the debounce histories are not kept (they refill
within a few windows).

One JSON file, `rules-state.json` in the state directory, written to a temporary name and
renamed, so a crash leaves the old or the new file, never half of one. An asset's entry
holds what is open or cooling down: per rule the open recommendation's id, since, severity,
due time and the raising window's values (`at_raise`, which clear conditions read), and
the cooldown's end; the review's open flag and cooldown. At most `max_assets` entries, the
least recently saved go first (each drop counted). A file that cannot be read or written
(read-only or full disk) is logged and counted (`edge_rule_state_errors_total`) and the
advisor runs on from memory: never a failure of the agent.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.rules.parts import Severity

if TYPE_CHECKING:
    from edge_agent.rules.engine import _AssetState

log = structlog.get_logger(__name__)

FILE_NAME: Final = "rules-state.json"
VERSION: Final = 1


class RuleStore:
    """The advisor's state of every asset, in one file under the state directory."""

    def __init__(self, state_dir: Path, max_assets: int = 1000) -> None:
        self.path = state_dir / FILE_NAME
        self._max = max_assets
        self._limited = RateLimited(60.0)
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def _load(self) -> None:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._failed("read", exc)
            return
        try:
            doc = json.loads(text)
            if doc.get("version") != VERSION or not isinstance(doc.get("assets"), dict):
                raise ValueError(f"not a version {VERSION} rule state file")  # noqa: TRY301
        except (ValueError, AttributeError) as exc:
            self._failed("read", exc)
            return
        for asset, entry in doc["assets"].items():
            if isinstance(entry, dict):
                self._entries[asset] = entry
        log.info("rule state restored", file=str(self.path), assets=len(self._entries))

    def restore(self, asset: str, state: _AssetState) -> None:
        """Fill a fresh asset state with what was saved for it (rules not in the pack: dropped)."""
        from edge_agent.rules.engine import _Active  # noqa: PLC0415 - engine imports this module

        entry = self._entries.get(asset)
        if entry is None:
            return
        try:
            for rule_id, saved in entry.get("rules", {}).items():
                rs = state.rules.get(rule_id)
                if rs is None:
                    continue
                rs.cooldown_until = float(saved.get("cooldown_until", -math.inf))
                active = saved.get("active")
                if active is not None:
                    rs.active = _Active(
                        str(active["id"]),
                        float(active["since"]),
                        Severity(int(active["severity"])),
                        float(active["due_within_h"]),
                        dict(active["at_raise"]),
                    )
            review = entry.get("review", {})
            state.review.open = bool(review.get("open", False))
            state.review.cooldown_until = float(review.get("cooldown_until", -math.inf))
        except (KeyError, TypeError, ValueError) as exc:
            self._failed("read", exc)

    def save(self, states: Mapping[str, _AssetState], assets: Iterable[str]) -> None:
        """Record the state of `assets` (those a window just changed), then write the file."""
        for asset in dict.fromkeys(assets):
            state = states.get(asset)
            entry = None if state is None else _entry(state)
            self._entries.pop(asset, None)
            if entry is not None:
                self._entries[asset] = entry
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            metrics.RULE_STATE_ERRORS.labels("dropped").inc()
        self._write()

    def _write(self) -> None:
        doc = {"version": VERSION, "assets": self._entries}
        tmp = self.path.with_name(f".{FILE_NAME}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(doc, f, separators=(",", ":"))  # NaN and infinities round-trip
            tmp.replace(self.path)
        except (OSError, TypeError, ValueError) as exc:
            self._failed("write", exc)
            with contextlib.suppress(OSError):  # a read-only disk refuses even this
                tmp.unlink(missing_ok=True)

    def _failed(self, op: str, exc: BaseException) -> None:
        metrics.RULE_STATE_ERRORS.labels(op).inc()
        held = self._limited.allow(op)
        if held is not None:
            log.error(
                "rule_state_failed",
                op=op,
                file=str(self.path),
                error=str(exc),
                consequence="open incidents and cooldowns are kept in memory only: after a "
                "restart an ongoing fault is raised again",
                held_back=held,
            )


def _entry(state: _AssetState) -> dict[str, Any] | None:
    """What to keep of one asset's state, or None when nothing is open or cooling down."""
    rules: dict[str, Any] = {}
    for rule_id, rs in state.rules.items():
        if rs.active is None and rs.cooldown_until == -math.inf:
            continue
        saved: dict[str, Any] = {"cooldown_until": rs.cooldown_until}
        if rs.active is not None:
            a = rs.active
            saved["active"] = {
                "id": a.id,
                "since": a.since,
                "severity": int(a.severity),
                "due_within_h": a.due_within_h,
                "at_raise": a.at_raise,
            }
        rules[rule_id] = saved
    review = state.review
    if not rules and not review.open and review.cooldown_until == -math.inf:
        return None
    return {
        "rules": rules,
        "review": {"open": review.open, "cooldown_until": review.cooldown_until},
    }
