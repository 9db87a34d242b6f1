"""The outbox: every outgoing message waits here until the uplink broker acknowledged it.

Replay order: priority class (highest first), then time; messages of one class keep their
order, so per-asset order holds within a class. When full, the lowest class is dropped
first, oldest first within a class; every drop is counted (`OUTBOX_DROPPED`) and logged.
A message that can never be delivered never blocks the queue: it is moved aside (aside.py),
checked as it comes in and again when publishing it fails for a reason of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import structlog

from edge_agent.core import metrics
from edge_agent.core.logs import RateLimited
from edge_agent.core.readings import Outgoing
from edge_agent.daemon.outbox.aside import Aside, AsideLog, Undeliverable, check
from edge_agent.daemon.outbox.memory import MemoryQueue, count_drop, publish_batch
from edge_agent.daemon.outbox.settings import OutboxSettings
from edge_agent.daemon.outbox.store import StorageError, Store, frames
from edge_agent.daemon.outbox.window import Window, deliver_window

if TYPE_CHECKING:
    from edge_agent.core.ports import Sink

log = structlog.get_logger(__name__)

_RETRY_MIN_S: Final = 0.5
_RETRY_MAX_S: Final = 30.0
_RECOVER_EVERY_S: Final = 1.0  # how often a degraded outbox tries its file again
# A commit on the worker gave the loop a turn per put(); one on the loop gives none. A turn
# per put() (epoll, acks read, the window's task) cost more than the commit, so puts in a row
# give one when this long passed since the last: acks and other tasks wait no longer.
_TURN_S: Final = 0.001
_INLINE_MAX_FRAMES: Final = 256  # larger commits (~0.5 MiB and up) go to the worker thread
_DELETE_WITH_PUT: Final = 64  # acked rows a put() deletes with its own, once this many wait
_T = TypeVar("_T")
_Item = tuple[int | None, Outgoing, Undeliverable]  # (row in the file or None, message, why)


class Outbox(Protocol):
    """Where outgoing messages wait for the uplink."""

    async def put(self, msgs: Sequence[Outgoing]) -> None:
        """Store messages; once it returns they survive what the outbox promises."""
        ...

    async def deliver(self, sink: Sink) -> None:
        """Publish in order until cancelled; remove a message only after its ack."""
        ...

    def depth(self) -> int:
        """Messages waiting (including those in flight)."""
        ...

    def status(self) -> str:
        """Where messages are kept now: `disk`, or `memory (<why>)` when degraded."""
        ...

    async def close(self) -> None:
        """Release files; messages not yet acknowledged stay for the next start."""
        ...


class SqliteOutbox:
    """The outbox on disk (SQLite, WAL): written before publishing, deleted after PUBACK.

    File work runs on one worker thread, except a put()'s commit while that thread is idle
    (`_insert_now`: a write() into the WAL, tens of us; a thread hop costs more). When
    the file cannot be written (disk full, read-only, I/O error) the outbox says so loudly
    (log, `edge_outbox_degraded`, `status()`) and buffers in memory, bounded by
    `memory_max_messages` with the same drop policy, until a write succeeds again. Messages
    buffered in memory then are published after those on disk.
    """

    def __init__(self, settings: OutboxSettings, path: Path) -> None:
        self._settings = settings
        self._store = Store(path, settings.max_bytes, settings.synchronous)
        self._mem = MemoryQueue(settings.memory_max_messages, "memory")
        self._exec = ThreadPoolExecutor(1, thread_name_prefix="outbox-sqlite")
        self._ready = asyncio.Event()
        self._limited = RateLimited(10.0)
        self._degraded: str | None = None
        self._next_recovery = 0.0
        self._inflight: frozenset[int] = frozenset()
        self._window: Window | None = None  # the delivery window, while one runs
        self._acked_undeleted: set[int] = set()  # published, delete failed: never re-send
        self._aside = AsideLog()
        # Jobs handed to the worker thread and jobs it finished, each counted by one thread:
        # equal when the worker is idle, and the event loop may then use the file itself.
        self._handed = self._done = 0
        self._inline = settings.synchronous == "normal"  # full: fsync per commit, off the loop
        self._turned = 0.0  # when put() last gave the loop a turn (_TURN_S)
        try:
            self._store.open()
        except StorageError as exc:
            self._degrade(exc)
        self._gauges()

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        self._handed += 1
        return await asyncio.get_running_loop().run_in_executor(self._exec, self._job, fn, args)

    def _job(self, fn: Callable[..., _T], args: tuple[object, ...]) -> _T:
        try:
            self._store.patient(wait=True)  # here, another writer's lock may be waited for
            return fn(*args)
        finally:
            self._store.patient(wait=False)  # the loop never waits (_insert_now)
            self._done += 1  # only this thread writes it

    def _insert_now(self, msgs: Sequence[Outgoing]) -> range | None:
        """Commit on the event loop when that is cheap and safe; None: the worker must.

        Cheap: synchronous=normal, where a commit is a write() into the WAL (tens of us)
        and survives a crash of the agent; an fsync (full) or a checkpoint (which fsyncs)
        stays on the worker. Safe: the worker is idle, so one thread at a time uses the
        file. Rows the window saw acknowledged, once `_DELETE_WITH_PUT` wait, are deleted
        in the same transaction.
        """
        store = self._store
        window = self._window
        n_acked = len(window.acked) if window is not None else 0
        n_acked = n_acked if n_acked >= _DELETE_WITH_PUT else 0
        written = frames(msgs, n_acked)
        if (
            not self._inline
            or self._handed != self._done
            or written > _INLINE_MAX_FRAMES
            or store.wal_frames + written >= store.wal_pages
        ):
            return None
        acked = window.take_acked() if window is not None and n_acked else []
        try:
            seqs = store.insert_now(msgs, acked)
        except StorageError:
            self._acked_undeleted.update(acked)  # never re-sent; deleted on recovery
            if window is not None:
                window.took(acked, deleted=True)
            raise
        if window is not None and acked:
            window.took(acked, deleted=seqs is not None)
        return seqs

    def status(self) -> str:
        """`disk`, or `memory (<why>)` while the file cannot be written."""
        return "disk" if self._degraded is None else f"memory ({self._degraded})"

    def depth(self) -> int:
        """Messages waiting, on disk and in memory, including those in flight."""
        return self._store.count + len(self._mem)

    def _gauges(self) -> None:
        # Read at each scrape: deliveries settled by the window delete rows without passing
        # here, and a value set on put() only stayed stale (36 shown, 17 waiting).
        metrics.OUTBOX_DEPTH.set_function(self.depth)
        metrics.OUTBOX_DEGRADED.set(0 if self._degraded is None else 1)

    def _insert(
        self, msgs: list[Outgoing], pinned: frozenset[int]
    ) -> tuple[list[Outgoing], range | None]:
        """On the worker thread: store, and say which seqs the rows took (None: unknown)."""
        dropped = self._store.insert(msgs, pinned)
        return dropped, self._store.inserted

    def _pinned(self) -> frozenset[int]:
        """Rows being published (or about to be): never dropped to make room."""
        window = self._window
        return self._inflight if window is None else frozenset(window.held)

    def _degrade(self, exc: StorageError) -> None:
        metrics.OUTBOX_ERRORS.labels(exc.kind).inc()
        self._next_recovery = time.monotonic() + _RECOVER_EVERY_S
        if self._degraded is None:
            log.error(
                "outbox_degraded",
                file=str(self._store.path),
                kind=exc.kind,
                error=str(exc),
                action="buffering in memory until the file can be written "
                f"(EDGE_OUTBOX__MEMORY_MAX_MESSAGES={self._settings.memory_max_messages})",
            )
        self._degraded = exc.kind
        self._gauges()

    def _dropped(self, msgs: Sequence[Outgoing]) -> None:
        why = f"EDGE_OUTBOX__MAX_BYTES={self._settings.max_bytes}"
        for msg in msgs:
            count_drop(msg, "disk", self._limited, why)

    async def _recover(self) -> None:
        """Try the file again: reopen it, move the memory buffer into it."""
        if self._degraded is None or time.monotonic() < self._next_recovery:
            return
        self._next_recovery = time.monotonic() + _RECOVER_EVERY_S
        pending = self._mem.head(len(self._mem))
        try:
            if not self._store.is_open:
                await self._call(self._store.open)
            dropped = await self._call(self._store.insert, pending, self._pinned())
            if self._acked_undeleted:
                await self._call(self._store.delete, sorted(self._acked_undeleted))
                self._acked_undeleted.clear()
        except StorageError as exc:
            metrics.OUTBOX_ERRORS.labels(exc.kind).inc()
            return
        self._mem.remove(pending)
        self._dropped(dropped)
        log.warning("outbox_recovered", file=str(self._store.path), moved_from_memory=len(pending))
        self._degraded = None
        self._gauges()

    async def put(self, msgs: Sequence[Outgoing]) -> None:
        """Commit messages to the file (or, degraded, to memory) before returning.

        A message that can never be delivered is moved aside instead (aside.py).
        """
        if not msgs:
            return
        if self._degraded is not None:
            await self._recover()
        verdicts = [(m, check(m, self._settings.max_bytes)) for m in msgs]
        bad = [(None, m, why) for m, why in verdicts if why is not None]
        if bad:
            await self._move_aside(bad)
            msgs = [m for m, why in verdicts if why is None]
            if not msgs:
                return
        if self._degraded is None and await self._put_file(msgs):
            return
        self._mem.push(msgs)
        self._gauges()
        self._ready.set()

    async def _put_file(self, msgs: Sequence[Outgoing]) -> bool:
        """Commit to the file and offer the rows to the window; False: the file failed."""
        try:
            seqs = self._insert_now(msgs)
            inline = seqs is not None
            if not inline:
                dropped, seqs = await self._call(self._insert, list(msgs), self._pinned())
                self._dropped(dropped)
        except StorageError as exc:
            self._degrade(exc)
            return False
        window = self._window
        rows = list(zip(seqs, msgs, strict=True)) if seqs is not None else []
        if window is None or not rows or not window.offer(rows):
            self._ready.set()
        if inline and time.monotonic() - self._turned >= _TURN_S:
            await asyncio.sleep(0)
            self._turned = time.monotonic()
        return True

    async def _move_aside(
        self, items: Sequence[tuple[int | None, Outgoing, Undeliverable]]
    ) -> None:
        """Take messages out of the queue for good, keeping a bounded copy of each."""
        seqs = [seq for seq, _, _ in items if seq is not None]
        where = f"{self._store.path} table aside"
        copies = [self._aside.note(m, why, where) for _, m, why in items]
        kept = False
        if self._store.is_open and self._degraded is None:
            try:
                kept = await self._call(self._store.move_aside, seqs, copies)
            except StorageError as exc:
                self._degrade(exc)
                if seqs:
                    self._acked_undeleted.update(seqs)  # never re-sent; deleted on recovery
        elif seqs:
            self._acked_undeleted.update(seqs)
        if not kept:
            self._aside.keep_in_memory(copies)
        self._mem.remove([m for seq, m, _ in items if seq is None])
        self._gauges()

    @property
    def aside(self) -> list[Aside]:
        """Copies held in memory of messages moved aside while the file could not keep them."""
        return list(self._aside.memory)

    async def _next(self, n: int) -> list[tuple[int | None, Outgoing]]:
        if self._store.is_open:
            try:
                page = await self._call(self._store.page, n, frozenset(self._acked_undeleted))
            except StorageError as exc:
                self._degrade(exc)
            else:
                if page:
                    return list(page)
        return [(None, m) for m in self._mem.head(n)]

    async def deliver(self, sink: Sink) -> None:
        """Publish in replay order until cancelled; delete each only after its ack.

        While the file is healthy, with a window of messages in flight (window.py); while
        it is not, a page at a time from memory.
        """
        delay = _RETRY_MIN_S
        max_bytes = self._settings.max_bytes
        while True:
            await self._recover()
            if self._degraded is None and self._store.is_open:
                if await deliver_window(_WindowBox(self), sink):
                    await asyncio.sleep(delay)  # the link closed under a publish
                    delay = min(delay * 2, _RETRY_MAX_S)
                else:
                    delay = _RETRY_MIN_S
                continue
            self._ready.clear()  # before reading: a put() during the read sets it again
            items = await self._next(sink.window)
            if not items:
                timeout = _RECOVER_EVERY_S if self._degraded is not None else None
                # Not asyncio.wait_for: under 3.11 it swallows a cancellation that arrives as
                # the event is set, and this loop would then never stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._ready.wait()
                continue
            # Checked again on the way out: the file may hold what an older agent let in.
            unfit = [(seq, m, why) for seq, m in items if (why := check(m, max_bytes))]
            if unfit:
                await self._move_aside(unfit)
                continue
            self._inflight = frozenset(seq for seq, _ in items if seq is not None)
            try:
                done, bad = await publish_batch(sink, [m for _, m in items])
            finally:
                self._inflight = frozenset()
            if bad:
                seq_of = {id(m): seq for seq, m in items}
                await self._move_aside([(seq_of[id(m)], m, why) for m, why in bad])
            acked = {id(m) for m in done}
            seqs = [seq for seq, m in items if seq is not None and id(m) in acked]
            self._mem.remove([m for seq, m in items if seq is None and id(m) in acked])
            if seqs:
                try:
                    await self._call(self._store.delete, seqs)
                except StorageError as exc:
                    self._acked_undeleted.update(seqs)
                    self._degrade(exc)
            self._gauges()
            if len(done) + len(bad) < len(items):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
            else:
                delay = _RETRY_MIN_S

    async def close(self) -> None:
        """Close the file; what is only in memory is lost (and logged)."""
        if len(self._mem):
            log.error("outbox_lost_on_close", messages=len(self._mem), reason=self._degraded)
        await self._call(self._store.close)
        self._exec.shutdown(wait=True)


class _WindowBox:
    """The outbox as the delivery window sees it (window.Box)."""

    def __init__(self, box: SqliteOutbox) -> None:
        self._box = box

    @property
    def ready(self) -> asyncio.Event:
        return self._box._ready  # noqa: SLF001 - the outbox's own helper

    @property
    def max_bytes(self) -> int:
        return self._box._settings.max_bytes  # noqa: SLF001

    def healthy(self) -> bool:
        return self._box._degraded is None and self._box._store.is_open  # noqa: SLF001

    def attach(self, window: Window | None) -> None:
        self._box._window = window  # noqa: SLF001

    async def read_rows(self, n: int, after: dict[int, int]) -> list[tuple[int, Outgoing]] | None:
        box = self._box
        skip = frozenset(box._acked_undeleted)  # noqa: SLF001
        try:
            return await box._call(box._store.page, n, skip, after)  # noqa: SLF001
        except StorageError as exc:
            box._degrade(exc)  # noqa: SLF001
            return None

    async def delete_rows(self, seqs: list[int]) -> None:
        box = self._box
        try:
            await box._call(box._store.delete, seqs)  # noqa: SLF001
        except StorageError as exc:
            box._acked_undeleted.update(seqs)  # noqa: SLF001 - never re-sent
            box._degrade(exc)  # noqa: SLF001
        box._gauges()  # noqa: SLF001

    async def set_aside(self, items: Sequence[tuple[int | None, Outgoing, Undeliverable]]) -> None:
        await self._box._move_aside(items)  # noqa: SLF001


def open_outbox(settings: OutboxSettings, state_dir: Path) -> Outbox:
    """Open the outbox file `outbox.db` in `state_dir` (created if missing)."""
    return SqliteOutbox(settings, state_dir / "outbox.db")
