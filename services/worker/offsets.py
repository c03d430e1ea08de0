"""Which offsets a worker may commit while attempts finish out of order.

A worker runs many attempts at once, and a fast one fetched after a slow one finishes
first. Committing its offset would skip the slow one if the worker died: so per partition
only the position below the oldest unfinished offset is committable (Kafka's commit means
"everything before this is done"). Pure bookkeeping: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Partition:
    order: deque[int] = field(default_factory=deque)  # started offsets, oldest first
    pending: set[int] = field(default_factory=set)  # started and not yet done
    position: int | None = None  # next offset to commit: every offset below it is done
    committed: int | None = None


class OffsetTracker:
    """Tracks started and done offsets per partition; `committable()` says what to commit."""

    def __init__(self) -> None:
        self._partitions: dict[Hashable, _Partition] = {}

    def start(self, partition: Hashable, offset: int) -> None:
        """An offset was fetched; call in fetch order (offsets grow per partition)."""
        state = self._partitions.setdefault(partition, _Partition())
        if offset in state.pending:
            return
        state.order.append(offset)
        state.pending.add(offset)

    def done(self, partition: Hashable, offset: int) -> None:
        """Everything the message at `offset` caused was produced; unknown offsets are ignored."""
        state = self._partitions.get(partition)
        if state is None or offset not in state.pending:
            return
        state.pending.discard(offset)
        while state.order and state.order[0] not in state.pending:
            state.position = state.order.popleft() + 1

    def committable(self, partitions: Iterable[Hashable] | None = None) -> dict[Hashable, int]:
        """Positions to commit (next offset to read) that moved since the last commit."""
        keys = self._partitions if partitions is None else partitions
        result: dict[Hashable, int] = {}
        for key in keys:
            state = self._partitions.get(key)
            if state is None or state.position is None:
                continue
            if state.committed is None or state.position > state.committed:
                result[key] = state.position
        return result

    def mark_committed(self, positions: dict[Hashable, int]) -> None:
        for key, position in positions.items():
            state = self._partitions.get(key)
            if state is not None:
                state.committed = max(position, state.committed or 0)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions were revoked: their next owner starts from the last commit."""
        for key in partitions:
            self._partitions.pop(key, None)

    def pending_count(self, partition: Hashable) -> int:
        state = self._partitions.get(partition)
        return 0 if state is None else len(state.pending)
