"""The executor's Kafka consumer: every input record reaches the stream, in order.

Faust 0.15.3 builds its consumers from its aiokafka driver's `Transport.Consumer`, and
that consumer builds aiokafka's through the driver module's `aiokafka` name, looked up at
call time. `install_consumers` points both at our subclasses (the real `aiokafka` module is
untouched for the rest of the process). They fix three things, each of which lost
executions or made them slow (docs/architecture.md, "The executor's consumer"):

- Faust can lose input records around a rebalance. It fetches input records while the
  rebalance recovers the tables, delivers the first ones into stream queues that the
  recovery then clears, seeks back to the committed offsets, and goes on delivering the
  rest of the batch it fetched before the seek. The next record delivered is then past
  the committed offset; Faust takes the difference for a gap in the topic (as compaction
  or transaction markers make) and acknowledges the missing offsets, so the next commit
  skips records no stream ever saw: task results, kills and resumes committed and never
  applied. Our input topics are never compacted and carry no transactions, so their
  offsets are contiguous and a record beyond the next expected offset always means
  records were skipped: `GaplessConsumer` then seeks the partition back to the expected
  offset, drops the rest of the stale batch for it, and never acknowledges a gap. Changelog
  topics are compacted and read by table recovery: they keep Faust's behaviour.
- Faust's seek back to the committed offsets goes through aiokafka's `seek_to_committed`,
  which skips partitions with no committed offset (or offset 0): their position stayed
  past the records dropped, for good (`execution-commands` before its first commit, so
  the first kills and resumes after a start). Those partitions go back to their
  beginning, as the `earliest` reset policy would.
- The embedded broker answers a fetch only after about half of the consumer's
  `fetch_max_wait_ms`; Faust hard-codes 1,500 ms (~750 ms per hop). On that broker our
  aiokafka consumer uses a low fetch wait.
"""

from __future__ import annotations

import logging
import types
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import aiokafka
import faust.transport.drivers.aiokafka as faust_driver
from aiokafka import TopicPartition
from faust.types import TP, Message

log = logging.getLogger(__name__)


class GaplessConsumer(faust_driver.Consumer):
    """Faust's aiokafka consumer for topics with contiguous offsets (`gapless_topics`)."""

    gapless_topics: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The offset of the next record each input partition must deliver; absent when
        # unknown (a partition never committed, until its first record).
        self._next_offset: dict[TP, int] = {}

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        stale: set[TP] = set()
        async for tp, message in super().getmany(timeout):
            if tp.topic not in self.gapless_topics:
                yield tp, message
                continue
            if tp in stale:
                continue  # the rest of a batch fetched before a seek
            expected = self._next_offset.get(tp)
            if expected is not None and message.offset < expected:
                continue  # fetched again after a seek back: delivered already
            if expected is not None and message.offset > expected:
                log.warning(
                    "%s[%d]: record %d came while %d was expected; fetching again from %d",
                    tp.topic,
                    tp.partition,
                    message.offset,
                    expected,
                    expected,
                )
                stale.add(tp)
                await self.seek(tp, expected)
                continue
            self._next_offset[tp] = message.offset + 1
            yield tp, message

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._next_offset[partition] = offset

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # Back to the committed offsets, or to the beginning of partitions never committed
        # (`_SeekingKafkaConsumer`): what was delivered beyond them is fetched again.
        self._next_offset.clear()
        never_committed = []
        for tp in self.assignment():
            if tp.topic in self.gapless_topics:
                committed = self._committed_offset.get(tp)
                if committed:
                    self._next_offset[tp] = committed
                else:
                    never_committed.append(tp)
        if never_committed:
            earliest = await self.earliest_offsets(*never_committed)
            self._next_offset.update(
                {tp: offset for tp, offset in earliest.items() if offset is not None}
            )

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if tp.topic not in self.gapless_topics:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        # Acknowledging it would commit past records never applied: commits of this
        # partition wait instead (getmany above fetches such records again).
        log.error(
            "%s[%d]: offsets %d-%d were skipped; not acknowledging them",
            tp.topic,
            tp.partition,
            offset_from,
            offset_to,
        )


class _SeekingKafkaConsumer(aiokafka.AIOKafkaConsumer):
    """aiokafka's consumer whose `seek_to_committed` also moves partitions never committed
    (back to their beginning), and whose fetch wait can be forced (`fetch_max_wait_ms`)."""

    fetch_max_wait_ms: ClassVar[int | None] = None

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        if self.fetch_max_wait_ms is not None:
            kwargs["fetch_max_wait_ms"] = self.fetch_max_wait_ms
        super().__init__(*topics, **kwargs)

    async def seek_to_committed(self, *partitions: TopicPartition) -> dict[TopicPartition, int]:
        committed = await super().seek_to_committed(*partitions)
        never_committed = [tp for tp, offset in committed.items() if not offset]
        if never_committed:
            await self.seek_to_beginning(*never_committed)
        return committed


def install_consumers(gapless_topics: Iterable[str], fetch_max_wait_ms: int | None) -> None:
    """Make the Faust apps of this process consume through our consumers: `gapless_topics`
    are checked for skipped records; `fetch_max_wait_ms`, when not None, replaces Faust's."""
    GaplessConsumer.gapless_topics = frozenset(gapless_topics)
    faust_driver.Transport.Consumer = GaplessConsumer  # type: ignore[misc]
    _SeekingKafkaConsumer.fetch_max_wait_ms = fetch_max_wait_ms
    patched = types.ModuleType("aiokafka")
    patched.__dict__.update(aiokafka.__dict__)
    patched.AIOKafkaConsumer = _SeekingKafkaConsumer  # type: ignore[attr-defined]
    faust_driver.aiokafka = patched  # type: ignore[attr-defined]
