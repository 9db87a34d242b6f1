"""Rule state that outlives the process: open incidents, cooldowns, open reviews.

Without it a restart mid-incident raised the same fault again under a new id, and its
`resolved` could never name the raise operators saw. The advisor hands its state here
whenever a window produced a recommendation (`save`) and asks for an asset's saved state
when it first sees the asset (`restore`); the debounce histories are not kept (they refill
within a few windows).

An SQLite file, `rules-state.sqlite` in the state directory, one row an asset; a save
writes only the assets the window changed, in one transaction (WAL, synchronous=NORMAL,
as the outbox: it survives a crash of the agent once `save` returns). It is written on
the event loop before the recommendation goes to the outbox, so an incident is never
published without its state; a save costs a fraction of a millisecond (measured: the JSON
file of every asset this replaced cost 18 ms a window at 100 assets, most of the advice
latency in `python -m bench latency`). An asset's entry holds what is open or cooling
down: per rule the open recommendation's id, since, severity, due time and the raising
window's values (`at_raise`, which clear conditions read), and the cooldown's end; the
review's open flag and cooldown. At most `max_assets` rows, the least recently saved go
first (each drop counted). A file that cannot be read or written (read-only or full disk)
is logged and counted (`edge_rule_state_errors_total`) and the advisor runs on from
memory: never a failure of the agent. A file that is not a database is renamed aside
(`.damaged`) and a new one started.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
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

FILE_NAME: Final = "rules-state.sqlite"
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS asset_state "
    "(asset TEXT PRIMARY KEY, seq INTEGER NOT NULL, entry TEXT NOT NULL)"
)


class RuleStore:
    """The advisor's state of every asset, one row an asset under the state directory."""

    def __init__(self, state_dir: Path, max_assets: int = 1000) -> None:
        self.path = state_dir / FILE_NAME
        self._max = max_assets
        self._limited = RateLimited(60.0)
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self._seq = 0
        self._unsaved: set[str] = set()  # assets whose last write failed: retried with the next
        self._load()

    def __len__(self) -> int:
        return len(self._entries)

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            # Autocommit mode: `save` opens its own transaction (BEGIN ... COMMIT).
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        return self._db

    def _load(self) -> None:
        if not self.path.exists():
            return  # created by the first save: a read-only directory fails there, counted
        try:
            rows = (
                self._open()
                .execute("SELECT asset, seq, entry FROM asset_state ORDER BY seq")
                .fetchall()
            )
        except sqlite3.DatabaseError as exc:
            self._failed("read", exc)
            self._close()
            if not isinstance(exc, sqlite3.OperationalError):  # not a database, malformed
                with contextlib.suppress(OSError):
                    self.path.replace(self.path.with_name(FILE_NAME + ".damaged"))
            return
        for asset, seq, text in rows:
            try:
                entry = json.loads(text)
            except ValueError as exc:
                self._failed("read", exc)
                continue
            if isinstance(entry, dict):
                self._entries[str(asset)] = entry
            self._seq = max(self._seq, int(seq))
        log.info("rule state restored", file=str(self.path), assets=len(self._entries))

    def _close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def close(self) -> None:
        """Close the file (at the agent's stop); a later save opens it again."""
        self._close()

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
        """Record the state of `assets` (those a window just changed) in one transaction."""
        upsert: list[tuple[str, int, str]] = []
        delete: list[tuple[str]] = []
        changed = dict.fromkeys(assets)
        retry = [a for a in self._unsaved if a not in changed]
        self._unsaved.clear()
        try:
            for asset in changed:
                state = states.get(asset)
                entry = None if state is None else _entry(state)
                self._entries.pop(asset, None)
                if entry is None:
                    delete.append((asset,))
                    continue
                self._entries[asset] = entry
                self._seq += 1
                # NaN and infinities round-trip (cooldowns of -inf, a NaN baseline)
                upsert.append((asset, self._seq, _dumps(entry)))
        except (TypeError, ValueError) as exc:
            self._failed("write", exc)
            return
        for asset in retry:  # as they are in memory now (another lane's, or dropped since)
            entry = self._entries.get(asset)
            if entry is None:
                delete.append((asset,))
            else:
                upsert.append((asset, self._seq, _dumps(entry)))
        while len(self._entries) > self._max:
            dropped, _ = self._entries.popitem(last=False)
            delete.append((dropped,))
            metrics.RULE_STATE_ERRORS.labels("dropped").inc()
        try:
            db = self._open()
            db.execute("BEGIN")
            try:
                # Deletes last: an asset stored above and then dropped by the bound must go.
                db.executemany("INSERT OR REPLACE INTO asset_state VALUES (?, ?, ?)", upsert)
                db.executemany("DELETE FROM asset_state WHERE asset = ?", delete)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            self._failed("write", exc)
            self._close()  # the next save tries again (a disk that was full may have room)
            self._unsaved.update(a for a, *_ in upsert)
            self._unsaved.update(a for (a,) in delete)

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


def _dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"))


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
