"""Where the app taps the pipeline for the page, without the flow knowing about it.

`ObservedOutbox` wraps the outbox (a Protocol) and shows each batch put into it to the
observer; `ObservedAdvisor` wraps a lane's advisor and shows each batch of scored windows
to the observer before the rules see it. Both add one call per batch, not per reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from edge_agent.core.ports import Sink
from edge_agent.core.readings import Outgoing, WindowResult
from edge_agent.daemon.outbox.queue import Outbox
from edge_agent.daemon.web.observer import Observer
from edge_agent.rules.engine import Advisor, Recommendation, RulePack


class HasAdvisor(Protocol):
    """A lane: whatever holds an advisor the pipeline calls."""

    advisor: Advisor


class ObservedOutbox:
    """An outbox that tells `observer` what is put into it (implements `Outbox`)."""

    def __init__(self, inner: Outbox, observer: Observer) -> None:
        self.inner = inner
        self._observer = observer

    async def put(self, msgs: Sequence[Outgoing]) -> None:
        """Store, then show the batch (only what was stored reaches the page)."""
        await self.inner.put(msgs)
        self._observer.published(msgs)

    async def deliver(self, sink: Sink) -> None:
        """As the inner outbox."""
        await self.inner.deliver(sink)

    def depth(self) -> int:
        """As the inner outbox."""
        return self.inner.depth()

    def status(self) -> str:
        """As the inner outbox."""
        return self.inner.status()

    async def close(self) -> None:
        """As the inner outbox."""
        await self.inner.close()


class ObservedAdvisor(Advisor):
    """A lane's advisor that shows each batch of scored windows to an observer first.

    A proxy: every rule state stays in `inner`, so wrapping changes no verdict. An interim
    tap until the pipeline calls an observer itself (a one-line hook in the lane's step).
    """

    def __init__(self, inner: Advisor, observer: Observer) -> None:  # a proxy: no state of its own
        self.inner = inner
        self.observer = observer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def pack(self) -> RulePack:
        """The inner advisor's pack."""
        return self.inner.pack

    def replace_pack(self, pack: RulePack) -> None:
        """As the inner advisor."""
        self.inner.replace_pack(pack)

    def evaluate(self, results: Sequence[WindowResult]) -> list[Recommendation]:
        """Show the results, then let the inner advisor evaluate them."""
        if results:
            self.observer.scored(results)
        return self.inner.evaluate(results)


def watch_lanes(lanes: Iterable[HasAdvisor], observer: Observer) -> None:
    """Wrap the advisor of every lane not yet watched (idempotent, cheap)."""
    for lane in lanes:
        if not isinstance(lane.advisor, ObservedAdvisor):
            lane.advisor = ObservedAdvisor(lane.advisor, observer)
