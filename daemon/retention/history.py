"""Compressed history kept in memory, oldest block first, until the budget or TTL takes it.

A block is the points one series retained in one ingest call. Blocks not yet sent upstream
are packed into digests (see `messages`); sent blocks stay for local reading until evicted or
expired.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# Accounted per block beside 16 B a point: the Block, its bytes object, the two floats and
# its deque slot, measured with tracemalloc (tests/test_history_bytes.py). A block holds a
# few points (one series, one ingest call), so the objects around them dominate: points are
# kept as one bytes object (ts then values) instead of two numpy arrays, 170 B a block
# instead of 352 B; the arrays are made when a digest or a reader asks.
BLOCK_OVERHEAD = 176


@dataclass(slots=True)
class Block:
    """Retained points of one series from one ingest call."""

    asset: str
    signal: str
    data: bytes  # float64 timestamps, then float64 values
    deviation: float  # the bound these points were retained under
    created: float  # store clock at insertion; the TTL counts from here
    sent: bool = False

    @property
    def size(self) -> int:
        """Points in the block."""
        return len(self.data) // 16

    @property
    def ts(self) -> F64:
        """Timestamps (a read-only view)."""
        return np.frombuffer(self.data, np.float64, self.size)

    @property
    def values(self) -> F64:
        """Values (a read-only view)."""
        n = self.size
        return np.frombuffer(self.data, np.float64, n, 8 * n)

    @property
    def nbytes(self) -> int:
        """Accounted size."""
        return len(self.data) + BLOCK_OVERHEAD


class HistoryStore:
    """FIFO of blocks with byte accounting and a TTL on the store's clock."""

    def __init__(self, ttl_s: float, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._blocks: deque[Block] = deque()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def append(self, asset: str, signal: str, ts: F64, values: F64, deviation: float) -> Block:
        """Add the points one series retained; the caller enforces the budget afterwards."""
        data = np.asarray(ts, np.float64).tobytes() + np.asarray(values, np.float64).tobytes()
        block = Block(asset, signal, data, deviation, self._clock())
        self._blocks.append(block)
        self.nbytes += block.nbytes
        return block

    def pop_oldest(self) -> Block | None:
        """Remove and return the oldest block (eviction takes this one next)."""
        if not self._blocks:
            return None
        block = self._blocks.popleft()
        self.nbytes -= block.nbytes
        return block

    def expired(self) -> Iterator[Block]:
        """Remove and yield the blocks older than the TTL."""
        now = self._clock()
        while self._blocks and now - self._blocks[0].created >= self.ttl_s:
            block = self._blocks.popleft()
            self.nbytes -= block.nbytes
            yield block

    def series(self, asset: str, signal: str) -> tuple[F64, F64]:
        """All points still held for one series, in time order."""
        mine = [b for b in self._blocks if b.asset == asset and b.signal == signal]
        if not mine:
            return np.empty(0), np.empty(0)
        return np.concatenate([b.ts for b in mine]), np.concatenate([b.values for b in mine])

    def take_unsent(self, max_points: int) -> list[tuple[str, list[Block]]]:
        """Mark unsent blocks sent; group them by asset, at most ~`max_points` per group."""
        groups: list[tuple[str, list[Block]]] = []
        open_group: dict[str, tuple[list[Block], int]] = {}
        for block in self._blocks:
            if block.sent:
                continue
            block.sent = True
            blocks, points = open_group.get(block.asset, ([], 0))
            if points and points + block.size > max_points:
                groups.append((block.asset, blocks))
                blocks, points = [], 0
            blocks.append(block)
            open_group[block.asset] = (blocks, points + block.size)
        groups += [(asset, blocks) for asset, (blocks, _) in open_group.items()]
        return groups
