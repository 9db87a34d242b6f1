"""Delivery with a window of messages in flight, while the outbox file is healthy.

Up to `Sink.window` messages wait for their PUBACK at once; as each ack comes in, the next
message in replay order goes out, so the link never idles waiting for the slowest ack of a
page. Messages are read from the file ahead of sending (at most `2 x window` held here), by
a cursor per priority class (the highest seq read so far), so a read costs only the rows
that are new; a put() wakes the reader, and a message of a higher class goes out before
those of lower classes read earlier (but after those already in flight). Acknowledged rows
are deleted in batches, one transaction at a time, while publishing goes on.

Guarantees kept: a row is deleted only after its ack; within a class messages are published
in seq order over one connection (per-asset order); every buffer here is bounded by the
window. When a publish fails because the link closed, the window drains (the acks of those in
flight are awaited and deleted) and the caller backs off before reading again from the start
of the file. When the file fails, the window drains and the caller goes on from memory.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from edge_agent.core import metrics
from edge_agent.core.errors import ConnectorError, PublishRefusedError
from edge_agent.core.readings import Outgoing, Priority
from edge_agent.daemon.outbox.aside import Undeliverable, check

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from edge_agent.core.ports import Sink

log = structlog.get_logger(__name__)

_CLASSES = sorted(Priority, reverse=True)  # replay order: highest class first
_QUEUED_WINDOWS = 4  # rows held besides those in flight, in windows
_DELETE_BATCH = 256  # acked rows deleted in one transaction at most ...
_DELETE_AFTER_S = 0.02  # ... or those acked within this long
Row = tuple[int, Outgoing]


@runtime_checkable
class Submits(Protocol):
    """A sink that can publish without a task per message (MqttSink can)."""

    def submit(self, msg: Outgoing) -> asyncio.Future[None]:
        """Publish; the future completes with the acknowledgement."""
        ...


class Box(Protocol):
    """What the window needs of the outbox (SqliteOutbox has it)."""

    @property
    def ready(self) -> asyncio.Event:
        """Set by put() when it stored messages it could not offer to the window."""
        ...

    @property
    def max_bytes(self) -> int:
        """The outbox's byte bound, against which a message is checked on the way out."""
        ...

    def healthy(self) -> bool:
        """Whether the file is open and written to."""
        ...

    def attach(self, window: Window | None) -> None:
        """Offer stored rows to `window` from now on (None: to no one)."""
        ...

    async def read_rows(self, n: int, after: dict[int, int]) -> list[Row] | None:
        """The next `n` rows in replay order past each class's cursor; None: file failed."""
        ...

    async def delete_rows(self, seqs: list[int]) -> None:
        """Remove acknowledged rows (a failure degrades the outbox; they are never re-sent)."""
        ...

    async def set_aside(self, items: Sequence[tuple[int | None, Outgoing, Undeliverable]]) -> None:
        """Move messages that can never be delivered aside."""
        ...


def undeliverable(msg: Outgoing, exc: BaseException) -> Undeliverable | None:
    """Why a publish that raised `exc` can never succeed, or None when the link is at fault.

    The broker refused it (MQTT 5 reason >= 0x80; also counted as refused), or publishing
    raised something other than a ConnectorError (which is about the link, not the message:
    it is logged and left for the next try). A BaseException that is not an Exception is
    raised again.
    """
    if isinstance(exc, PublishRefusedError):
        metrics.OUTBOX_REFUSED.labels(msg.priority.name.lower()).inc()
        return Undeliverable("refused", str(exc))
    if isinstance(exc, ConnectorError):
        log.warning("outbox_publish_failed", topic=msg.topic[:200], error=str(exc))
        return None
    if isinstance(exc, Exception):
        return Undeliverable("publish_error", f"{type(exc).__name__}: {exc}")
    raise exc


async def deliver_window(box: Box, sink: Sink) -> bool:
    """Deliver while the file is healthy; return True if the link failed (caller backs off).

    Returns False when the file stopped being healthy (the caller goes on degraded).
    """
    window = Window(box, sink)
    box.attach(window)
    try:
        return await window.run()
    finally:
        box.attach(None)


class Window:
    """Messages read or offered from the file, those in flight, and those acked."""

    def __init__(self, box: Box, sink: Sink) -> None:
        self.box = box
        self.sink = sink
        self.size = max(1, sink.window)
        self.cap = _QUEUED_WINDOWS * self.size  # rows held here besides those in flight
        self.queued: dict[Priority, collections.deque[Row]] = {
            p: collections.deque() for p in Priority
        }
        self.n_queued = 0
        self.after: dict[int, int] = {int(p): 0 for p in Priority}  # highest seq known
        self.held: set[int] = set()  # queued, in flight, acked and not yet deleted
        self.flying: dict[asyncio.Future[None], Row] = {}
        self.finished: collections.deque[asyncio.Future[None]] = collections.deque()
        self.acked: list[int] = []
        self.delete_due: float | None = None  # when the acked rows are deleted at the latest
        self.deleting: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.caught_up = False  # every stored row is known here
        self.reading = False
        self.missed = False  # an offer was refused while a read ran: it may not hold it
        self.stored: list[Row] = []  # offered while a read ran
        self.link_failed = False
        self.read: asyncio.Task[bool] | None = None
        submit = sink.submit if isinstance(sink, Submits) else None
        self._submit: Callable[[Outgoing], asyncio.Future[None]] = submit or (
            lambda msg: asyncio.ensure_future(sink.publish(msg))
        )

    # -- put() hands stored rows over here, saving a read --------------------------------
    def offer(self, rows: Sequence[Row]) -> bool:
        """Take rows just stored; False if they must be read from the file instead."""
        if self.reading and self.n_queued + len(self.stored) + len(rows) <= self.cap:
            self.stored.extend(rows)  # taken when the read ends, if it leaves us caught up
            return True
        if not self.caught_up or self.reading or self.n_queued + len(rows) > self.cap:
            self.caught_up = False
            self.missed = self.missed or self.reading
            return False
        after = self.after
        for seq, msg in rows:
            if seq <= after[int(msg.priority)]:  # out of order: read them instead
                self.caught_up = False
                after[int(msg.priority)] = min(after[int(msg.priority)], seq - 1)
                return False
        self._queue(rows)
        if not self.link_failed:
            # At once, and without waking the window's task (a turn of the loop per put()):
            # what _launch leaves queued goes when acks come in, which wake the task.
            self._launch()
        return True

    def take_acked(self) -> list[int]:
        """Hand the acked rows to put(), which deletes them with the rows it stores."""
        seqs, self.acked = self.acked, []
        self.delete_due = None
        return seqs

    def took(self, seqs: list[int], *, deleted: bool) -> None:
        """put() deleted the rows `take_acked` gave it, or (not `deleted`) gives them back."""
        if deleted:
            self.held.difference_update(seqs)
        else:
            self.acked[:0] = seqs

    def _queue(self, rows: Sequence[Row]) -> None:
        for seq, msg in rows:
            if seq in self.held:
                continue
            self.after[int(msg.priority)] = max(self.after[int(msg.priority)], seq)
            self.queued[msg.priority].append((seq, msg))
            self.held.add(seq)
            self.n_queued += 1

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> bool:
        """Deliver until the file fails or the link does; True if the link did."""
        box = self.box
        watch: asyncio.Task[bool] | None = None
        try:
            while box.healthy() and not self.link_failed and self._reads():
                # Settled first: a future that finished still counts as in flight until then,
                # and _launch holds a lone message back while any is (it then waited for the
                # next wake, the delete timer's _DELETE_AFTER_S, after the last ack was in).
                await self._settle()
                if not self.link_failed:
                    self._launch()
                self._delete_acked()
                if watch is None or watch.done():
                    watch = asyncio.ensure_future(box.ready.wait())
                    watch.add_done_callback(self._wake)
                read = self.read
                if not self.finished and not box.ready.is_set() and not (read and read.done()):
                    self.wake.clear()
                    await self.wake.wait()
            if self.read is not None:
                await self.read
            await self._drain()
        except BaseException:
            for fut in self.flying:
                fut.cancel()
            if self.read is not None:
                self.read.cancel()
            raise
        finally:
            if watch is not None:
                watch.cancel()
        return self.link_failed

    def _reads(self) -> bool:
        """Take a finished read, start the next one if rows may wait; False: file failed.

        Reads run beside publishing, one at a time, so acks keep flowing while one runs.
        """
        if self.box.ready.is_set():
            self.box.ready.clear()  # a put() during a read sets it again
            self.caught_up = False
        read = self.read
        if read is not None and read.done():
            self.read = None
            if not read.result():
                return False
        if self.read is None and not self.caught_up and self.n_queued < self.cap:
            self.read = asyncio.ensure_future(self._read())
            self.read.add_done_callback(self._wake)
        return True

    def _wake(self, _: object) -> None:
        self.wake.set()

    def _finish(self, fut: asyncio.Future[None]) -> None:
        self.finished.append(fut)
        self.wake.set()

    async def _read(self) -> bool:
        """Queue the next rows from the file; False if it failed."""
        room = self.cap - self.n_queued
        self.reading, self.missed = True, False
        try:
            rows = await self.box.read_rows(room, dict(self.after))
        finally:
            self.reading = False
        if rows is None:
            return False
        # Caught up if the file had no more rows, and every put() that stored rows during the
        # read offered them here (they come after what it read); otherwise read again.
        stored, self.stored = self.stored, []
        self.caught_up = len(rows) < room and not self.missed
        fit: list[Row] = []
        unfit: list[tuple[int | None, Outgoing, Undeliverable]] = []
        for seq, msg in rows:
            why = check(msg, self.box.max_bytes)  # the file may hold what an older agent let in
            if why is None:
                fit.append((seq, msg))
            else:
                unfit.append((seq, msg, why))
                self.after[int(msg.priority)] = max(self.after[int(msg.priority)], seq)
        self._queue(fit)
        if self.caught_up:
            self._queue(stored)
        if unfit:
            await self.box.set_aside(unfit)
        return True

    def _launch(self) -> None:
        """Fill the window from the queue, highest class first, in bursts.

        With nothing in flight, at once. Otherwise once half the window is free and half a
        window waits: many acks are then read in one turn of the loop and many publishes
        written in one, instead of one message per turn (which costs more than the message
        when they trickle in one put() at a time). A message waits for at most the acks of
        those in flight (one round trip to the broker).
        """
        half = self.size // 2
        if self.flying and (self.n_queued < half or len(self.flying) > half):
            return
        while len(self.flying) < self.size and self.n_queued:
            for p in _CLASSES:
                q = self.queued[p]
                if q:
                    row = q.popleft()
                    break
            self.n_queued -= 1
            fut = self._submit(row[1])
            fut.add_done_callback(self._finish)
            self.flying[fut] = row

    def _delete_acked(self) -> None:
        """Delete the acked rows in one transaction, when enough are in or they waited enough.

        A transaction per ack would cost the worker thread as much as the inserts; batches
        of up to `_DELETE_BATCH`, or what `_DELETE_AFTER_S` gathered, cost a fraction.
        """
        if not self.acked or (self.deleting is not None and not self.deleting.done()):
            return
        loop = asyncio.get_running_loop()
        if len(self.acked) < _DELETE_BATCH:
            if self.delete_due is None:
                self.delete_due = loop.time() + _DELETE_AFTER_S
                loop.call_at(self.delete_due, self.wake.set)
            if loop.time() < self.delete_due:
                return
        self.delete_due = None
        seqs, self.acked = self.acked, []
        self.deleting = asyncio.ensure_future(self._delete(seqs))

    async def _delete(self, seqs: list[int]) -> None:
        try:
            await self.box.delete_rows(seqs)
        finally:
            self.held.difference_update(seqs)
            self.wake.set()

    async def _settle(self) -> None:
        """Take the outcome of finished publishes."""
        bad: list[tuple[int | None, Outgoing, Undeliverable]] = []
        while self.finished:
            fut = self.finished.popleft()
            row = self.flying.pop(fut, None)
            if row is None or fut.cancelled():
                continue
            seq, msg = row
            exc = fut.exception()
            if exc is None:
                self.acked.append(seq)
            elif (why := undeliverable(msg, exc)) is not None:
                bad.append((seq, msg, why))
            else:
                self.link_failed = True
                self.held.discard(seq)  # stays in the file, read again after the back-off
        if bad:
            await self.box.set_aside(bad)
            self.held.difference_update(seq for seq, _, _ in bad)
        if self.deleting is not None and self.deleting.done():
            self.deleting.result()  # a StorageError is handled inside; anything else surfaces
            self.deleting = None

    async def _drain(self) -> None:
        """Wait for the acks in flight and delete every acked row before handing back."""
        while self.flying:
            if not self.finished:
                self.wake.clear()
                await self.wake.wait()
            await self._settle()
        if self.deleting is not None:
            await self.deleting
            self.deleting = None
        if self.acked:
            seqs, self.acked = self.acked, []
            await self._delete(seqs)
