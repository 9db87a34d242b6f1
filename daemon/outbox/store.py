"""The outbox file: SQLite in WAL mode, bounded in pages, used by one thread at a time.

Size bound: `PRAGMA max_page_count = max_bytes // page_size`, so `outbox.db` never grows
past `max_bytes` (rounded down to whole pages). The WAL file beside it holds at most
about `wal_pages` pages plus one transaction between checkpoints (counted by `frames`, run
on the worker thread, never inside a commit on the event loop) and is cut back to
`journal_size_limit` after each. When the cap is reached, rows are dropped by the
outbox policy (lowest class first, oldest first within a class, never a message being
published) until the new one fits; a message of a lower class than everything stored is
dropped itself.

Messages that can never be delivered are moved aside into the table `aside` (see aside.py):
at most `ASIDE_MAX_ROWS` rows, newest kept, each holding the first `aside.ASIDE_PAYLOAD_BYTES` of
its payload and `aside.ASIDE_TOPIC_CHARS` of its topic with their full lengths. Inspect them with
`sqlite3 outbox.db 'SELECT at, reason, msg_id, topic, payload_bytes FROM aside'`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import structlog

from edge_agent.core.readings import Outgoing, Priority
from edge_agent.daemon.outbox.aside import row as aside_row

if TYPE_CHECKING:
    from edge_agent.daemon.outbox.aside import Aside

log = structlog.get_logger(__name__)

Kind = Literal["full", "readonly", "io", "corrupt"]
PAGE_SIZE: Final = 4096
_VICTIMS_PER_ROUND: Final = 256
_ROW_OVERHEAD: Final = 64  # bytes of a row besides payload and topic, roughly (ids, index)
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS msg (
    seq INTEGER PRIMARY KEY,  -- insertion order: time within a class
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    msg_id TEXT NOT NULL,
    key TEXT NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS msg_order ON msg (priority, seq);
CREATE TABLE IF NOT EXISTS aside (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,  -- when it was moved aside (UTC, ISO 8601)
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    priority INTEGER NOT NULL,
    msg_id TEXT NOT NULL,
    key TEXT NOT NULL,
    topic TEXT NOT NULL,  -- its first ASIDE_TOPIC_CHARS characters
    topic_chars INTEGER NOT NULL,
    payload BLOB NOT NULL,  -- its first ASIDE_PAYLOAD_BYTES bytes
    payload_bytes INTEGER NOT NULL
);
"""
ASIDE_MAX_ROWS: Final = 256
_ASIDE_INSERT: Final = (
    "INSERT INTO aside (at, reason, detail, priority, msg_id, key, topic, topic_chars, payload, "
    "payload_bytes) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_ASIDE_TRIM: Final = (
    "DELETE FROM aside WHERE seq NOT IN (SELECT seq FROM aside ORDER BY seq DESC LIMIT ?)"
)
_INSERT: Final = (
    "INSERT INTO msg (seq, priority, topic, payload, msg_id, key, qos, retain) "
    "VALUES (?,?,?,?,?,?,?,?)"
)
_DELETE: Final = "DELETE FROM msg WHERE seq = ?"
BUSY_WAIT_MS: Final = 5000  # for another connection's write lock, on the worker thread only
_CLASSES_DESC: Final = sorted(Priority, reverse=True)


class StorageError(Exception):
    """The outbox file cannot be written or read; `kind` says why."""

    def __init__(self, kind: Kind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: Kind = kind


def _kind(exc: sqlite3.Error) -> Kind:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return "full"
    if code == sqlite3.SQLITE_READONLY:
        return "readonly"
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return "corrupt"
    return "io"


def _row(seq: int, msg: Outgoing) -> tuple[int, int, str, bytes, str, str, int, int]:
    m = msg
    return (seq, int(m.priority), m.topic, m.payload, m.msg_id, m.key, m.qos, int(m.retain))


def frames(msgs: Sequence[Outgoing], deleted: int) -> int:
    """WAL frames (pages) a transaction storing `msgs` and deleting `deleted` rows may write.

    An upper estimate: page 1 and a freelist or parent page; per row stored, its table and
    index leaves and its overflow pages twice over; for rows deleted, their leaves.
    """
    stored = sum(2 + (len(m.payload) + len(m.topic)) // (PAGE_SIZE // 2) for m in msgs)
    return 2 + stored + (2 + deleted // 2 if deleted else 0)


class Store:
    """The SQLite file behind the outbox. Not thread-safe: one worker thread calls it."""

    def __init__(self, path: Path, max_bytes: int, synchronous: str) -> None:
        self.path = path
        self.cap_pages = max(16, max_bytes // PAGE_SIZE)
        self._sync = synchronous.upper()
        self._db: sqlite3.Connection | None = None
        self.count = 0
        self.aside = 0  # rows in `aside`
        self.inserted: range | None = None  # seqs of the last insert(); None if it made room
        self.wal_pages = max(16, min(4096, self.cap_pages // 4))  # WAL frames between checkpoints
        self.wal_frames = 0  # WAL frames written since the last checkpoint (an upper estimate)
        self._patient = False  # busy_timeout on: set by the worker thread around its jobs
        # The next row's seq, never repeated in a process: SQLite's max(seq) + 1 gave an emptied
        # table's seqs again, which the window still held as being deleted and never sent.
        self._next_seq = 1

    @property
    def is_open(self) -> bool:
        """Whether the file is open."""
        return self._db is not None

    def open(self) -> None:
        """Open (or create) the file; a corrupt one is moved aside and replaced."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            kind: Kind = "readonly" if exc.errno == errno.EROFS else "io"
            raise StorageError(kind, f"cannot create {self.path.parent}: {exc.strerror}") from exc
        try:
            self._connect()
        except StorageError as exc:
            if exc.kind != "corrupt":
                raise
            aside = self._move_aside()
            log.error(  # noqa: TRY400 - a traceback adds nothing a person can act on
                "outbox_corrupt",
                file=str(self.path),
                moved_to=str(aside),
                error=str(exc),
                action="starting with an empty outbox",
            )
            self._connect()

    def _connect(self) -> None:
        try:
            # check_same_thread off: opened here, then used by the outbox's one worker thread.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(_kind(exc), str(exc)) from exc
        try:
            self._configure(db)
        except sqlite3.Error as exc:
            db.close()
            raise StorageError(_kind(exc), str(exc)) from exc
        except StorageError:
            db.close()
            raise
        self._db = db

    def _configure(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError("io", f"journal_mode WAL refused ({mode})")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StorageError("corrupt", f"quick_check: {check}")
        db.execute(f"PRAGMA synchronous={self._sync}")
        db.execute("PRAGMA busy_timeout=0")  # never wait for another writer on the loop (patient)
        self._patient = False
        db.execute(f"PRAGMA max_page_count={self.cap_pages}")
        # Checkpoints fsync (milliseconds): never automatic, which could run one inside a
        # commit made on the event loop (insert_now); the worker thread runs them (_checked).
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute(f"PRAGMA journal_size_limit={self.wal_pages * PAGE_SIZE}")
        db.executescript(_SCHEMA)
        self.count = db.execute("SELECT count(*) FROM msg").fetchone()[0]
        last = db.execute("SELECT coalesce(max(seq), 0) FROM msg").fetchone()[0]
        self._next_seq = max(self._next_seq, int(last) + 1)
        self.wal_frames = self.wal_pages  # what a crash left in the WAL: checkpoint first
        self.aside = db.execute("SELECT count(*) FROM aside").fetchone()[0]

    def _move_aside(self) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        self.path.replace(aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                side.replace(aside.with_name(aside.name + suffix))
        return aside

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("io", "the outbox file is not open")
        return self._db

    def close(self) -> None:
        """Close the file (a clean checkpoint folds the WAL back in)."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def file_bytes(self) -> int:
        """Size of the main file in bytes."""
        db = self._conn()
        return int(db.execute("PRAGMA page_count").fetchone()[0]) * PAGE_SIZE

    def insert(self, msgs: Sequence[Outgoing], pinned: frozenset[int]) -> list[Outgoing]:
        """Store messages in one transaction; return those dropped to make room."""
        db = self._conn()
        self.inserted = None
        try:
            first = self._take(len(msgs))
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_INSERT, [_row(first + i, m) for i, m in enumerate(msgs)])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            kind = _kind(exc)
            if kind != "full" or not self._at_cap(msgs):
                raise StorageError(kind, str(exc)) from exc
            return self._insert_making_room(db, msgs, pinned)
        self.inserted = range(first, first + len(msgs))
        self.count += len(msgs)
        self._checked(frames(msgs, 0))
        return []

    def insert_now(self, msgs: Sequence[Outgoing], acked: Sequence[int]) -> range | None:
        """Store `msgs` and delete the acknowledged rows `acked`, in one transaction.

        For the event loop while the worker thread is idle: never checkpoints nor makes room.
        Returns the seqs the rows took; None (rolled back) at the cap or when another
        connection holds the write lock: insert() then, on the worker thread.
        """
        db = self._conn()
        try:
            deleted = 0
            first = self._take(len(msgs))
            if len(msgs) > 1 or acked:  # else one statement, a transaction of its own
                db.execute("BEGIN IMMEDIATE")
            if len(msgs) == 1:
                db.execute(_INSERT, _row(first, msgs[0]))
            else:
                db.executemany(_INSERT, [_row(first + i, m) for i, m in enumerate(msgs)])
            if acked:
                before = db.total_changes
                db.executemany(_DELETE, [(s,) for s in acked])
                deleted = db.total_changes - before
            if db.in_transaction:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if busy or (_kind(exc) == "full" and self._at_cap(msgs)):
                return None
            raise StorageError(_kind(exc), str(exc)) from exc
        self.count = max(0, self.count + len(msgs) - deleted)
        self.wal_frames += frames(msgs, len(acked))
        return range(first, first + len(msgs))

    def _take(self, n: int) -> int:
        """Reserve `n` seqs; the first (a failed insert leaves a gap: order is what counts)."""
        first = self._next_seq
        self._next_seq += n
        return first

    def patient(self, *, wait: bool) -> None:
        """Wait up to `BUSY_WAIT_MS` for another writer's lock (worker thread), or fail at once."""
        if self._db is not None and wait != self._patient:
            with contextlib.suppress(sqlite3.Error):  # the next statement says what is wrong
                self._db.execute(f"PRAGMA busy_timeout={BUSY_WAIT_MS if wait else 0}")
                self._patient = wait

    def _checked(self, written: int) -> None:
        """Count WAL frames written; checkpoint once `wal_pages` may be there (worker only)."""
        self.wal_frames += written
        if self.wal_frames < self.wal_pages or self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the WAL grows meanwhile; tried again at the next commit
            log.warning("outbox_checkpoint_failed", file=str(self.path), error=str(exc))
            return
        self.wal_frames = 0

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")

    def _at_cap(self, msgs: Sequence[Outgoing]) -> bool:
        """Whether SQLITE_FULL came from our page cap, not from the disk or another limit."""
        db = self._conn()
        limit = int(db.execute("PRAGMA max_page_count").fetchone()[0])
        if limit < self.cap_pages:
            return False  # a lower limit than ours: the storage is full, not the outbox
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        need = math.ceil(
            sum(len(m.payload) + len(m.topic) + _ROW_OVERHEAD for m in msgs) * 2 / PAGE_SIZE
        )
        return pages + need + 2 >= limit

    def _insert_making_room(
        self, db: sqlite3.Connection, msgs: Sequence[Outgoing], pinned: frozenset[int]
    ) -> list[Outgoing]:
        dropped: list[Outgoing] = []
        for msg in msgs:
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    db.execute(_INSERT, _row(self._take(1), msg))
                    db.execute("COMMIT")
                    self.count += 1
                    self._checked(frames([msg], 0))
                    break
                except sqlite3.Error as exc:
                    self._rollback(db)
                    if _kind(exc) != "full":
                        raise StorageError(_kind(exc), str(exc)) from exc
                victims = self._victims(db, msg, pinned)
                if not victims:
                    dropped.append(msg)  # everything stored outranks it (or is in flight)
                    break
                self._delete_rows(db, [seq for seq, _ in victims])
                dropped += [m for _, m in victims]
        return dropped

    def _victims(
        self, db: sqlite3.Connection, msg: Outgoing, pinned: frozenset[int]
    ) -> list[tuple[int, Outgoing]]:
        """The fewest rows, by the policy, whose bytes add up to the new message's.

        Freed space is only reusable once whole pages empty, so the caller may come back
        for more: dropping one row at a time never drops more than it must by much.
        """
        need = len(msg.payload) + len(msg.topic) + _ROW_OVERHEAD
        rows = db.execute(
            "SELECT seq, priority, topic, msg_id, key, qos, retain, length(payload) FROM msg "
            "WHERE priority <= ? ORDER BY priority, seq LIMIT ?",
            (int(msg.priority), _VICTIMS_PER_ROUND + len(pinned)),
        ).fetchall()
        out: list[tuple[int, Outgoing]] = []
        freed = 0
        for seq, p, topic, mid, key, qos, retain, size in rows:
            if seq in pinned:
                continue
            out.append((seq, Outgoing(topic, b"", mid, key, Priority(p), qos, bool(retain))))
            freed += size + len(topic) + _ROW_OVERHEAD
            if freed >= need:
                break
        return out

    def _delete_rows(self, db: sqlite3.Connection, seqs: Sequence[int]) -> None:
        before = db.total_changes
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_DELETE, [(s,) for s in seqs])
            deleted = db.total_changes - before
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StorageError(_kind(exc), str(exc)) from exc
        self.count = max(0, self.count - deleted)
        self._checked(frames([], len(seqs)))

    def page(
        self, n: int, skip: Iterable[int], after: Mapping[int, int] | None = None
    ) -> list[tuple[int, Outgoing]]:
        """The next `n` stored messages in replay order: class (highest first), then seq.

        `after` (class -> seq) starts each class past that row: the delivery window reads
        ahead this way, and each read costs only the rows it returns.
        """
        after = after or {}
        db = self._conn()
        skipped = set(skip)
        out: list[tuple[int, Outgoing]] = []
        try:
            for p in _CLASSES_DESC:
                rows = db.execute(
                    "SELECT seq, topic, payload, msg_id, key, qos, retain FROM msg "
                    "WHERE priority = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (int(p), after.get(int(p), 0), n - len(out) + len(skipped)),
                ).fetchall()
                for seq, topic, payload, mid, key, qos, retain in rows:
                    if seq in skipped:
                        continue
                    out.append((seq, Outgoing(topic, payload, mid, key, p, qos, bool(retain))))
                    if len(out) >= n:
                        return out
        except sqlite3.Error as exc:
            raise StorageError(_kind(exc), str(exc)) from exc
        return out

    def move_aside(self, seqs: Sequence[int], copies: Sequence[Aside]) -> bool:
        """Delete stored messages `seqs` and keep `copies` in `aside`, in one transaction.

        Returns whether the copies were kept: when they do not fit the file, the messages
        are still deleted (a message that can never go must not block its queue).
        """
        db = self._conn()
        for rows in ([aside_row(c) for c in copies], []):
            before = db.total_changes
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(_DELETE, [(s,) for s in seqs])
                deleted = db.total_changes - before
                if rows:
                    db.executemany(_ASIDE_INSERT, rows)
                    db.execute(_ASIDE_TRIM, (ASIDE_MAX_ROWS,))
                db.execute("COMMIT")
                self._checked(frames([c.msg for c in copies], len(seqs)))
            except sqlite3.Error as exc:
                self._rollback(db)
                if not rows or _kind(exc) != "full":
                    raise StorageError(_kind(exc), str(exc)) from exc
                continue
            self.count = max(0, self.count - deleted)
            if rows:
                self.aside = int(db.execute("SELECT count(*) FROM aside").fetchone()[0])
            return bool(rows)
        return False  # pragma: no cover - the second round either returns or raises

    def delete(self, seqs: Sequence[int]) -> None:
        """Remove acknowledged messages (one transaction)."""
        if seqs:
            self._delete_rows(self._conn(), seqs)
