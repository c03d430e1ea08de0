"""Which input record each partition must deliver next: the executor consumer's ledger.

Pure bookkeeping for `consumer.GaplessConsumer` (no Kafka, no Faust): input topics have
contiguous offsets, so each partition delivers offset after offset. A record past the
expected one means records were skipped: the partition is fetched again from the
expected offset (`Verdict.REWIND`), and what is left of the batch fetched before that
is stale. A record delivered and then dropped before the stream applied it (a rebalance
clears the stream queues) moves the partition back to it (`dropped`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from enum import Enum
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)  # a topic partition

# Seeks back to the same offset before the consumer gives up: a partition that keeps
# skipping the same records is wedged (a broker answering past them every time).
MAX_REWINDS = 10


class Verdict(Enum):
    DELIVER = "deliver"  # the expected record (or the first of a partition not tracked)
    DUPLICATE = "duplicate"  # delivered already: fetched again after a rewind
    STALE = "stale"  # the rest of a batch fetched before a rewind
    REWIND = "rewind"  # records were skipped: fetch again from `expected(partition)`


class RewoundTooOften(RuntimeError):
    """The same records were skipped MAX_REWINDS times in a row."""


class OffsetLedger(Generic[P]):
    def __init__(self) -> None:
        self._next: dict[P, int] = {}
        self._stale: set[P] = set()
        self._rewinds: dict[P, tuple[int, int]] = {}  # partition -> (offset, times)

    def expected(self, partition: P) -> int | None:
        return self._next.get(partition)

    def check(self, partition: P, offset: int) -> Verdict:
        """What to do with the record at `offset` of `partition`, fetched in the batch
        being delivered now (`new_batch` starts one)."""
        if partition in self._stale:
            return Verdict.STALE
        expected = self._next.get(partition)
        if expected is not None and offset < expected:
            return Verdict.DUPLICATE
        if expected is not None and offset > expected:
            self._stale.add(partition)
            times = self._rewinds.get(partition, (expected, 0))
            times = (expected, times[1] + 1 if times[0] == expected else 1)
            if times[1] > MAX_REWINDS:
                raise RewoundTooOften(
                    f"offset {expected} skipped {MAX_REWINDS} times in a row (next was {offset})"
                )
            self._rewinds[partition] = times
            return Verdict.REWIND
        self._next[partition] = offset + 1
        self._rewinds.pop(partition, None)
        return Verdict.DELIVER

    def new_batch(self) -> None:
        """A new fetch: what it brings follows the rewinds made so far."""
        self._stale.clear()

    def reset(self, expected: Mapping[P, int]) -> None:
        """Back to these offsets (the committed ones, after a seek to them); partitions
        not given are not tracked until their first record."""
        self._next = dict(expected)
        self._stale.clear()

    def skip_to(self, partition: P, offset: int) -> None:
        """The partition really starts at `offset` (records before it were deleted)."""
        self._next[partition] = offset
        self._rewinds.pop(partition, None)

    def dropped(self, partition: P, offset: int) -> bool:
        """A delivered record was dropped before it was applied: the partition must be
        fetched again from it. True when that moves the partition back."""
        expected = self._next.get(partition)
        if expected is not None and offset >= expected:
            return False
        self._next[partition] = offset
        self._stale.add(partition)
        return True


def head_missing(acked: Sequence[int], committed: int | None, floor: int | None) -> bool:
    """Whether a commit must wait: the next record to apply (the committed offset, or
    where this assignment started if later: nothing committed yet, or retention deleted
    records) is not among the acknowledged ones while later ones are."""
    starts = [offset for offset in (committed, floor) if offset is not None]
    return bool(acked and starts) and min(acked) > max(starts)
