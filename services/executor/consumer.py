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
  offsets are contiguous: `GaplessConsumer` keeps a ledger of the next offset each input
  partition must deliver (`offsets.py`). A record beyond it means records were skipped:
  the partition is fetched again from the expected offset and the rest of the stale
  batch is dropped. Records still in the queues when Faust clears them are fetched
  again. No gap is acknowledged, and no commit passes a record not applied. Changelog
  topics are compacted and read by table recovery: they keep Faust's behaviour.
- Faust's seek back to the committed offsets goes through aiokafka's `seek_to_committed`,
  which skips partitions with no committed offset (or offset 0): their position stayed
  past the records dropped, for good (`execution-commands` before its first commit, so
  the first kills and resumes after a start). Those partitions go back to their
  beginning, as the `earliest` reset policy would.
- The embedded broker answers a fetch only after up to half of the consumer's
  `fetch_max_wait_ms`; Faust hard-codes 1,500 ms (~750 ms per hop). Our aiokafka consumer
  is `headrace.kafka.AdaptiveConsumer`, whose wait follows the traffic like every other
  consumer of the services.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, ClassVar, NoReturn

import aiokafka
import faust.transport.drivers.aiokafka as faust_driver
from aiokafka import TopicPartition
from faust.types import TP, Message

from headrace.fetch_wait import FetchWait
from headrace.kafka import AdaptiveConsumer
from headrace.metrics import watch_lag
from headrace.services.executor.offsets import (
    OffsetLedger,
    RewoundTooOften,
    Verdict,
    head_missing,
)

log = logging.getLogger(__name__)

# As for a batch that failed (app.py): the supervisor restarts us, the rest replays.
EXIT_CONSUMER_WEDGED = 70  # EX_SOFTWARE


class GaplessConsumer(faust_driver.Consumer):
    """Faust's aiokafka consumer for topics with contiguous offsets (`gapless_topics`)."""

    gapless_topics: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ledger: OffsetLedger[TP] = OffsetLedger()
        self._rewind: dict[TP, int] = {}  # seeks to make before the next fetch
        # Where each input partition starts for this assignment: its committed offset,
        # or its earliest for one never committed (what a commit must not skip).
        self._floor: dict[TP, int] = {}
        # Faust clears the stream queues when flow resumes after a rebalance, dropping
        # records delivered but not applied; nothing fetches them again unless we do.
        flow_control = self.app.flow_control
        clear_queues = flow_control.clear

        def clear_and_rewind() -> None:
            self._note_dropped(flow_control._queues)
            clear_queues()

        flow_control.clear = clear_and_rewind  # type: ignore[method-assign]

    def _new_consumer_thread(self) -> faust_driver.AIOKafkaConsumerThread:
        return _AdaptingConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        self._ledger.new_batch()
        if self._rewind:
            rewind, self._rewind = self._rewind, {}
            await self._seek_back(rewind)
        async for tp, message in super().getmany(timeout):
            if tp.topic not in self.gapless_topics:
                yield tp, message
                continue
            try:
                verdict = self._ledger.check(tp, message.offset)
                if verdict is Verdict.REWIND:
                    verdict = await self._rewind_to_expected(tp, message.offset)
            except RewoundTooOften as exc:
                _exit(f"{tp.topic}[{tp.partition}]: {exc}")
            if verdict is Verdict.DELIVER:
                yield tp, message

    async def _rewind_to_expected(self, tp: TP, offset: int) -> Verdict:
        """Records before `offset` were skipped: fetch them again, unless retention deleted
        them already (then go on from the first record kept)."""
        expected = self._ledger.expected(tp)
        assert expected is not None
        earliest = (await self.earliest_offsets(tp)).get(tp)
        if earliest is not None and earliest > expected:
            log.error(
                "%s[%d]: records %d-%d were deleted (retention) before they were applied",
                tp.topic,
                tp.partition,
                expected,
                earliest - 1,
            )
            self._ledger.skip_to(tp, earliest)
            self._floor[tp] = earliest  # what a commit waits for now: the first record kept
            if offset == earliest:
                return self._ledger.check(tp, offset)
            expected = earliest
        log.warning(
            "%s[%d]: record %d came while %d was expected; fetching again from %d",
            tp.topic,
            tp.partition,
            offset,
            expected,
            expected,
        )
        await self._seek_back({tp: expected})
        return Verdict.STALE

    async def _seek_back(self, offsets: dict[TP, int]) -> None:
        assigned = self.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if offsets:
            # In the consumer's own thread, as aiokafka wants (Faust's `seek` is not).
            await self._thread.seek_wait(offsets)

    def _note_dropped(self, queues: Iterable[Any]) -> None:
        """Before the stream queues are cleared: fetch the records in them again."""
        for queue in queues:
            for event in list(queue._queue):
                message = getattr(event, "message", None)
                tp = getattr(message, "tp", None)
                gapless = tp is not None and tp.topic in self.gapless_topics
                if gapless and self._ledger.dropped(tp, message.offset):
                    self._rewind[tp] = message.offset

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # Back to the committed offsets, or to the beginning of partitions never committed
        # (`_SeekingKafkaConsumer`): what was delivered beyond them is fetched again.
        gapless = [tp for tp in self.assignment() if tp.topic in self.gapless_topics]
        earliest = await self.earliest_offsets(*gapless) if gapless else {}
        expected = {}
        for tp in gapless:
            offset = self._committed_offset.get(tp) or earliest.get(tp)
            if offset is not None:
                expected[tp] = offset
        # Nothing awaited from here: Faust resumes the flow right after this returns.
        self._ledger.reset(expected)
        self._floor = dict(expected)
        # Records may have been delivered while we awaited above, moving the position past
        # offsets the stream may never apply (its queues are cleared next): put every
        # partition where the ledger now expects it, before the next fetch.
        self._rewind = dict(expected)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        if tp.topic not in self.gapless_topics:
            await super()._add_gap(tp, offset_from, offset_to)
            return
        # Faust sees a "gap" when a seek reset its read offset under records being
        # delivered: either they were applied (and acknowledged then), or they were
        # dropped, and the ledger has them fetched again. Acknowledging them here would
        # let a commit pass the dropped ones before they are applied.
        log.debug("%s[%d]: not acknowledging %d-%d", tp.topic, tp.partition, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.gapless_topics:
            # Faust commits over a head of one missing record (it checks `min(acked) -
            # committed > 1`, but the committed offset is the next one to apply): the
            # first record after the committed offset must have been applied.
            committed = self._committed_offset.get(tp)
            if head_missing(self._acked[tp], committed, self._floor.get(tp)):
                return None
        return super()._new_offset(tp)


def _exit(why: str) -> NoReturn:
    log.critical("%s; exiting to replay from the committed offsets", why)
    os._exit(EXIT_CONSUMER_WEDGED)


class _AdaptingConsumerThread(faust_driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, which reads aiokafka's fetcher directly (not through
    `getmany`): tells our consumer what each fetch gave, so that its wait adapts, and
    fetches only what Faust reads (`_fetch_only`)."""

    async def getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # On the event loop: the consumer thread gets a copy. Faust's own set changes on
        # the loop (flow control, rebalances) while the thread would iterate it.
        frozen = None if active_partitions is None else frozenset(active_partitions)
        return await super().getmany(frozen, timeout)

    async def _fetch_records(
        self,
        consumer: _SeekingKafkaConsumer,
        active_partitions: frozenset[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        if active_partitions is not None:
            _fetch_only(consumer, active_partitions)
        fetched = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        consumer.adapt_fetch_wait(bool(fetched))
        return fetched


def _fetch_only(consumer: AdaptiveConsumer, active: frozenset[TP]) -> None:
    """Pause every assigned partition Faust does not read now, resume the ones it does.

    Faust leaves the changelog partitions assigned after recovery, unpaused, and reads
    only its active partitions: aiokafka kept fetching the executor's own changelog
    writes, and records fetched but not read hold every fetch to their broker for up to
    100 ms (aiokafka's prefetch backoff). Measured: a hop's p90 at ~90 ms; the
    state records, fetched back for nothing, also cost the broker and this process.
    """
    # aiokafka's own TopicPartition: it refuses Faust's TP, an equal tuple of another class.
    wanted = {TopicPartition(tp.topic, tp.partition) for tp in active}
    paused = consumer.paused()
    idle = consumer.assignment() - wanted - paused
    if idle:
        consumer.pause(*idle)
    if resumed := wanted & paused:
        consumer.resume(*resumed)


class _SeekingKafkaConsumer(AdaptiveConsumer):
    """Our consumer, whose `seek_to_committed` also moves partitions never committed (back
    to their beginning), with a fetch wait from `fetch_wait()` instead of Faust's."""

    fetch_wait: ClassVar[Callable[[], FetchWait]]

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        kwargs.pop("fetch_max_wait_ms", None)
        super().__init__(*topics, fetch_wait=type(self).fetch_wait(), **kwargs)
        # The input topics only: changelogs are read to a fence at recovery, then paused
        # (`_fetch_only`), so their high watermark goes stale and says nothing of a backlog.
        watch_lag(self, GaplessConsumer.gapless_topics)

    async def seek_to_committed(self, *partitions: TopicPartition) -> dict[TopicPartition, int]:
        committed = await super().seek_to_committed(*partitions)
        never_committed = [
            tp
            for tp, offset in committed.items()
            if not offset and tp.topic in GaplessConsumer.gapless_topics
        ]
        if never_committed:
            await self.seek_to_beginning(*never_committed)
        return committed


def install_consumers(gapless_topics: Iterable[str], fetch_wait: Callable[[], FetchWait]) -> None:
    """Make the Faust apps of this process consume through our consumers: `gapless_topics`
    are checked for skipped records; `fetch_wait()` gives each consumer its wait policy."""
    GaplessConsumer.gapless_topics = frozenset(gapless_topics)
    faust_driver.Transport.Consumer = GaplessConsumer  # type: ignore[misc]
    _SeekingKafkaConsumer.fetch_wait = staticmethod(fetch_wait)  # type: ignore[assignment]
    patched = types.ModuleType("aiokafka")
    patched.__dict__.update(aiokafka.__dict__)
    patched.AIOKafkaConsumer = _SeekingKafkaConsumer  # type: ignore[attr-defined]
    faust_driver.aiokafka = patched  # type: ignore[attr-defined]
