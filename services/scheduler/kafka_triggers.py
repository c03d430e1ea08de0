"""Kafka triggers: one execution per message (or per batch) of a user's topic.

`KafkaTriggers` follows the catalog: a consumer per declared `kafka` trigger, started
when the trigger appears, stopped when it disappears, is disabled or changes (then
started again with the new settings). Each consumer decodes values per
`valueDeserializer`, publishes the Starts, and commits the offsets only once the broker
acknowledged them. Execution ids derive from what was read: a message's topic,
partition, offset and timestamp; a batch's partition, first offset and timestamp and
number of records. Batches are cut the same way on every read (`Batcher`), so a
re-delivery after a crash or a rebalance re-publishes the same executions, which the
executor ignores.

A message whose value cannot be decoded is logged (topic, partition, offset) and
committed past: retrying cannot fix it, and it must not block the messages behind it.
A schema registry that does not answer is the opposite case: the fetched messages are
sought back to and read again after a growing delay, nothing is committed or skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from headrace.config import Settings
from headrace.consume import POLL_TIMEOUT_MS, consume
from headrace.core.ids import derive_id
from headrace.flow.triggers import KAFKA, KafkaBatch, KafkaTrigger
from headrace.kafka import make_consumer
from headrace.kafka_values import (
    RegistryUnavailable,
    SchemaRegistry,
    UndecodableValue,
    ValueDecoder,
    value_decoder,
)
from headrace.messages import TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger, TriggerCatalog
from headrace.services.scheduler.offsets import (
    NEW_GROUP_OFFSET_RESET,
    AssignmentTracker,
    pin_new_partitions,
)
from headrace.services.scheduler.starts import publish_starts, try_build_start
from headrace.topics.definitions import MAX_VALUE_BYTES

log = logging.getLogger(__name__)

# How often the running consumers are compared with the catalog (rebuilt as soon as the
# scheduler reads a change of the flows): a new trigger consumes within about 1 s plus
# the group join.
RECONCILE_INTERVAL_S = 1.0
# A consumer that crashed (say, its bootstrap servers are unreachable) is started again
# after this long, not on every reconcile: one error line per 10 s, not per second.
RESTART_DELAY_S = 10.0
# While a schema registry is down, the same messages are retried after 0.5 s, 1 s, 2 s…
# up to 30 s: quick recovery from a blip, one warning per 30 s in a long outage.
REGISTRY_RETRY_MIN_S = 0.5
REGISTRY_RETRY_MAX_S = 30.0
# A batch's messages (as JSON) stop short of this: half of what a start may take, so
# that inputs copying the messages (or their values) once still fit beside them.
MAX_BATCH_DATA_BYTES = MAX_VALUE_BYTES // 2
# Of the 22 base62 digits of a derived id, the group name keeps the last 8 (47 bits):
# the first digit of a 128-bit number is always 0-7, the last ones are uniform.
GROUP_HASH_DIGITS = 8


def default_group_id(namespace: str, flow_id: str, trigger_id: str) -> str:
    """The trigger's consumer group when the flow names none: readable and unambiguous.

    The readable part alone is not (ids may hold '-': `shop/orders-eu` trigger `new`
    and `shop/orders` trigger `eu-new` read the same); the hash of the key is.
    """
    digest = derive_id("kafka-trigger-group", namespace, flow_id, trigger_id)
    return f"{legacy_group_id(namespace, flow_id, trigger_id)}-{digest[-GROUP_HASH_DIGITS:]}"


def legacy_group_id(namespace: str, flow_id: str, trigger_id: str) -> str:
    """The default group of earlier versions: a new group resumes where it stopped."""
    return f"headrace-trigger-{namespace}-{flow_id}-{trigger_id}"


def decode_value(raw: bytes | None, decoder: ValueDecoder) -> Any:
    """The message value as the flow sees it; None for a tombstone (no value)."""
    return None if raw is None else decoder.decode(raw)


def _text(raw: bytes | None) -> str | None:
    # Keys and headers are metadata: a non-UTF-8 byte must not make the message unusable.
    return None if raw is None else raw.decode("utf-8", errors="replace")


def message_data(record: ConsumerRecord, decoder: ValueDecoder) -> dict[str, Any]:
    """One message as trigger data; raises `UndecodableValue`."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": _text(record.key),
        "value": decode_value(record.value, decoder),
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
        # A header name given twice keeps its last value.
        "headers": {name: _text(value) for name, value in record.headers or ()},
    }


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """A record as read: its trigger data (None when undecodable) and that data's size."""

    record: ConsumerRecord
    data: dict[str, Any] | None
    size: int  # bytes of `data` as JSON


def read_message(record: ConsumerRecord, decoder: ValueDecoder) -> ReadMessage:
    """Decode `record`; an undecodable one is logged and kept as data None."""
    try:
        data = message_data(record, decoder)
        # Measured as it will travel; an integer beyond 64 bits cannot, in any start.
        size = len(orjson.dumps(data))
    except (UndecodableValue, orjson.JSONEncodeError) as exc:
        log.error(
            "skipping message %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
        )
        return ReadMessage(record, None, 0)
    return ReadMessage(record, data, size)


def message_cause(record: ConsumerRecord) -> tuple[str | int, ...]:
    """A message's identity: where it is, and its timestamp, which tells a recreated
    topic's (or another cluster's) offset 0 from the old one's; a re-delivery reads the
    same timestamp from the log."""
    return ("kafka", record.topic, record.partition, record.offset, record.timestamp)


def message_starts(
    declared: DeclaredTrigger,
    records: Iterable[ConsumerRecord],
    now: datetime,
    decoder: ValueDecoder | None = None,
) -> list[TriggerEvent]:
    """One Start per decodable message (`decoder`: prepared for `records`)."""
    spec = declared.trigger.spec()
    assert isinstance(spec, KafkaTrigger)
    decoder = decoder or value_decoder(spec)
    starts = []
    for record in records:
        data = read_message(record, decoder).data
        if data is None:
            continue
        start = try_build_start(declared, {"type": KAFKA, **data}, message_cause(record), now)
        if start is not None:
            starts.append(start)
    return starts


@dataclass
class Batch:
    """Consecutive records of one partition, started as one execution."""

    topic: str
    partition: int
    first_offset: int
    first_timestamp: int  # ms, the record's own
    deadline: float  # monotonic s: started then, whatever else arrives
    last_offset: int = -1
    records: int = 0  # undecodable ones included: they were read all the same
    messages: list[dict[str, Any]] = field(default_factory=list)
    data_bytes: int = 0

    @property
    def cause(self) -> tuple[str | int, ...]:
        """The batch's identity; the timestamp tells a recreated topic's apart."""
        return (
            "kafka-batch",
            self.topic,
            self.partition,
            self.first_offset,
            self.first_timestamp,
            self.records,
        )

    def add(self, message: ReadMessage) -> None:
        self.last_offset = message.record.offset
        self.records += 1
        if message.data is not None:
            self.messages.append(message.data)
            self.data_bytes += message.size


class Batcher:
    """Cuts each partition's records into batches, as a function of the records.

    A batch starts at a record and takes the ones after it until it holds `maxRecords`,
    until the next one would take its messages over `MAX_BATCH_DATA_BYTES`, or up to
    the first one stamped `maxDuration` or more after its first. Read again from its
    first offset (after a crash, or by a new owner after a rebalance), a partition gives
    the same batches, hence the same execution ids. The clock cuts a batch too: one
    still open `maxDuration` after its first record was read is started as it is. A
    record appended after that yet stamped inside its window (a producer clock behind,
    a long send delay) would join it on a re-read, making another batch.
    """

    def __init__(self, spec: KafkaBatch) -> None:
        self._max_records = spec.max_records
        self._max_duration_s = spec.max_duration.total_seconds()
        self._max_duration_ms = int(self._max_duration_s * 1000)
        self.open: dict[TopicPartition, Batch] = {}

    def add(self, messages: Iterable[ReadMessage], now: float) -> list[Batch]:
        """Add read messages (each partition's in offset order); return the batches
        they complete. `now` is monotonic seconds."""
        complete = []
        for message in messages:
            record = message.record
            tp = TopicPartition(record.topic, record.partition)
            batch = self.open.get(tp)
            if batch is not None and record.offset <= batch.last_offset:
                continue  # fetched again (the position went back): already in
            if batch is not None and self._starts_next(batch, message):
                complete.append(self.open.pop(tp))
                batch = None
            if batch is None:
                deadline = now + self._max_duration_s
                batch = Batch(
                    record.topic, record.partition, record.offset, record.timestamp, deadline
                )
                self.open[tp] = batch
            batch.add(message)
            if batch.records >= self._max_records:
                complete.append(self.open.pop(tp))
        return complete

    def _starts_next(self, batch: Batch, message: ReadMessage) -> bool:
        window_end = batch.first_timestamp + self._max_duration_ms
        return (
            message.record.timestamp >= window_end
            or batch.data_bytes + message.size > MAX_BATCH_DATA_BYTES
        )

    def due(self, now: float) -> list[Batch]:
        """Remove and return the batches whose deadline passed."""
        due = [tp for tp, batch in self.open.items() if batch.deadline <= now]
        return [self.open.pop(tp) for tp in due]

    def next_deadline(self) -> float | None:
        return min((batch.deadline for batch in self.open.values()), default=None)

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget the open batches of `partitions` (revoked: another reader's now)."""
        for tp in partitions:
            self.open.pop(tp, None)


def batch_start(declared: DeclaredTrigger, batch: Batch, now: datetime) -> TriggerEvent | None:
    """One Start for the batch (None when no message in it decodes)."""
    if not batch.messages:
        return None
    data = {
        "type": KAFKA,
        "topic": batch.topic,
        "partition": batch.partition,
        "count": len(batch.messages),
        "messages": batch.messages,
    }
    return try_build_start(declared, data, batch.cause, now)


class _Tracker(AssignmentTracker):
    """Also drops the open batches of revoked partitions, before they are started.

    Their new owner, maybe this consumer again, reads them from the last commit and,
    batches being cut the same way on every read, starts the same batches.
    """

    def __init__(self, batcher: Batcher | None) -> None:
        super().__init__()
        self.batcher = batcher
        self.revocations = 0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await super().on_partitions_revoked(revoked)
        self.revocations += 1
        if self.batcher is not None:
            self.batcher.drop(revoked)


class TriggerConsumer:
    """Consumes one trigger's topic until cancelled."""

    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, declared: DeclaredTrigger
    ) -> None:
        spec = declared.trigger.spec()
        assert isinstance(spec, KafkaTrigger)
        own = spec.bootstrap_servers in (None, settings.kafka_bootstrap)
        # The trigger's Kafka, which may be another cluster than headrace's.
        self._kafka = dataclasses.replace(
            settings,
            kafka_bootstrap=spec.bootstrap_servers or settings.kafka_bootstrap,
            # Low group timeouts suit the embedded broker; a user's Kafka refuses them.
            low_latency=settings.low_latency and own,
        )
        self._producer = producer
        # Replaced by the manager when a new flow revision keeps the trigger unchanged.
        self.declared = declared
        self._batcher = Batcher(spec.batch) if spec.batch is not None else None
        self._tracker = _Tracker(self._batcher)
        self._retry_s = REGISTRY_RETRY_MIN_S

    @property
    def spec(self) -> KafkaTrigger:
        spec = self.declared.trigger.spec()
        assert isinstance(spec, KafkaTrigger)
        return spec

    def _consumer(self) -> AIOKafkaConsumer:
        group_id = self.spec.group_id or default_group_id(*self.declared.key)
        consumer = make_consumer(
            self._kafka,
            group_id=group_id,
            client_id=group_id,
            auto_offset_reset=NEW_GROUP_OFFSET_RESET,
        )
        consumer.subscribe([self.spec.topic], listener=self._tracker)
        return consumer

    async def _pin_new_partitions(self, consumer: AIOKafkaConsumer) -> None:
        inherited = None if self.spec.group_id else self._legacy_offsets
        await pin_new_partitions(consumer, self._tracker, inherited)

    async def _legacy_offsets(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Where the default group of earlier versions stopped on `partitions`."""
        group_id = legacy_group_id(*self.declared.key)
        # Not a member: a group's committed offsets are readable without joining it.
        reader = make_consumer(self._kafka, group_id=group_id, client_id=group_id)
        await reader.start()
        try:
            offsets = {tp: await reader.committed(tp) for tp in partitions}
        finally:
            await reader.stop()
        return {tp: offset for tp, offset in offsets.items() if offset is not None}

    async def run(self) -> None:
        consumer = self._consumer()
        try:
            # Inside the try: a stop while joining still leaves the group (no member
            # left behind for the next scheduler's join to wait on).
            await consumer.start()
            namespace, flow_id, trigger_id = self.declared.key
            log.info(
                "kafka trigger %s/%s %s consumes %s",
                namespace,
                flow_id,
                trigger_id,
                self.spec.topic,
            )
            async with self._registry() as registry:
                decoder = value_decoder(self.spec, registry)
                if self._batcher is None:
                    await self._per_message(consumer, decoder)
                else:
                    await self._per_batch(consumer, decoder, self._batcher)
        finally:
            await consumer.stop()

    def _registry(self) -> contextlib.AbstractAsyncContextManager[SchemaRegistry | None]:
        url = self.spec.schema_registry_url
        return SchemaRegistry(url) if url else contextlib.nullcontext(None)

    async def _prepared(
        self, consumer: AIOKafkaConsumer, decoder: ValueDecoder, records: list[ConsumerRecord]
    ) -> bool:
        """Whether `decoder` can decode `records` now (their schemas are fetched).

        If the registry is down, the records are sought back to, to be fetched and tried
        again after a delay: nothing past them is committed and none is skipped.
        """
        try:
            await decoder.prepare(record.value for record in records)
        except RegistryUnavailable as exc:
            log.warning(
                "kafka trigger %s: %s; reading again in %.1f s",
                "/".join(self.declared.key),
                exc,
                self._retry_s,
            )
            _rewind(consumer, records)
            await asyncio.sleep(self._retry_s)
            self._retry_s = min(self._retry_s * 2, REGISTRY_RETRY_MAX_S)
            return False
        self._retry_s = REGISTRY_RETRY_MIN_S
        return True

    async def _per_message(self, consumer: AIOKafkaConsumer, decoder: ValueDecoder) -> None:
        async def start(records: list[ConsumerRecord]) -> None:
            if await self._prepared(consumer, decoder, records):
                starts = message_starts(self.declared, records, datetime.now(UTC), decoder)
                await publish_starts(self._producer, starts)
                await _commit(consumer)

        await consume(consumer, start, before_fetch=partial(self._pin_new_partitions, consumer))

    async def _per_batch(
        self, consumer: AIOKafkaConsumer, decoder: ValueDecoder, batcher: Batcher
    ) -> None:
        def timeout_ms() -> int:
            deadline = batcher.next_deadline()
            if deadline is None:
                return POLL_TIMEOUT_MS
            return max(0, min(POLL_TIMEOUT_MS, int((deadline - time.monotonic()) * 1000)))

        async def add(records: list[ConsumerRecord]) -> None:
            if records and not await self._prepared(consumer, decoder, records):
                records = []  # sought back to: read again; the open batches are still due
            # A partition revoked while the registry answered is its new owner's to read.
            assigned = consumer.assignment()
            messages = [
                read_message(r, decoder)
                for r in records
                if TopicPartition(r.topic, r.partition) in assigned
            ]
            now = time.monotonic()
            complete = batcher.add(messages, now) + batcher.due(now)
            if complete:
                await self._start_batches(consumer, complete)

        await consume(
            consumer,
            add,
            before_fetch=partial(self._pin_new_partitions, consumer),
            timeout_ms=timeout_ms,
            handle_empty=True,  # open batches come due without new records
        )

    async def _start_batches(self, consumer: AIOKafkaConsumer, batches: list[Batch]) -> None:
        now = datetime.now(UTC)
        starts = [start for b in batches if (start := batch_start(self.declared, b, now))]
        revocations = self._tracker.revocations
        await publish_starts(self._producer, starts)
        # Explicit offsets: past what the batches held, not what was fetched beyond them.
        ends: dict[TopicPartition, int] = {}
        for batch in batches:
            tp = TopicPartition(batch.topic, batch.partition)
            ends[tp] = max(ends.get(tp, 0), batch.last_offset + 1)
        committed = await _commit(consumer, ends)
        if self._tracker.revocations != revocations:
            # Given back meanwhile, a partition's position went back to its commit from
            # before these batches: go on after them, do not read them again.
            assigned = consumer.assignment()
            for tp, offset in committed.items():
                if tp in assigned:
                    consumer.seek(tp, offset)


def _rewind(consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord]) -> None:
    """Seek each partition back to its first record in `records`."""
    firsts: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        firsts[tp] = min(firsts.get(tp, record.offset), record.offset)
    assigned = consumer.assignment()
    for tp, offset in firsts.items():
        if tp in assigned:  # a partition lost meanwhile is read again by its new owner
            consumer.seek(tp, offset)


async def _commit(
    consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int] | None = None
) -> dict[TopicPartition, int]:
    """Commit `offsets` (None: every position) of the partitions still assigned; return
    the offsets committed.

    A partition lost to a rebalance is its new owner's: it reads from the last commit
    and starts the same executions again, which the executor ignores.
    """
    if offsets is not None:
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return {}
    try:
        await consumer.commit(offsets)
    except (CommitFailedError, IllegalStateError) as exc:
        # IllegalStateError: no partition assigned at all, in the middle of a rebalance.
        log.warning("offset commit failed after a rebalance: %s", exc)
        return {}
    return offsets or {}


@dataclass
class _Running:
    consumer: TriggerConsumer
    task: asyncio.Task[None]


class KafkaTriggers:
    """The scheduler component: one `TriggerConsumer` per declared Kafka trigger."""

    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, catalog: TriggerCatalog
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._catalog = catalog
        self._running: dict[tuple[str, str, str], _Running] = {}
        self._crashed_at: dict[tuple[str, str, str], float] = {}

    @property
    def running(self) -> set[tuple[str, str, str]]:
        return {key for key, r in self._running.items() if not r.task.done()}

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONCILE_INTERVAL_S)
        finally:
            tasks = [r.task for r in self._running.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def reconcile(self) -> None:
        wanted = {d.key: d for d in self._catalog.of_kind(KAFKA)}
        for key, running in list(self._running.items()):
            declared = wanted.get(key)
            if running.task.done():
                self._report_crash(key, running.task)
                del self._running[key]
            elif declared is None or declared.trigger != running.consumer.declared.trigger:
                log.info("kafka trigger %s changed or removed: stopping its consumer", key)
                running.task.cancel()
                del self._running[key]
            else:
                running.consumer.declared = declared
        now = time.monotonic()
        for key, declared in wanted.items():
            if key in self._running or now < self._crashed_at.get(key, 0) + RESTART_DELAY_S:
                continue
            consumer = TriggerConsumer(self._settings, self._producer, declared)
            self._running[key] = _Running(consumer, asyncio.create_task(consumer.run()))

    def _report_crash(self, key: tuple[str, str, str], task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        self._crashed_at[key] = time.monotonic()
        log.error(
            "kafka trigger %s stopped, restarting in %.0f s",
            "/".join(key),
            RESTART_DELAY_S,
            exc_info=task.exception(),
        )
