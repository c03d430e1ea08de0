"""Kafka triggers: one execution per message (or per batch) of a user's topic.

`KafkaTriggers` follows the catalog: a consumer per declared `kafka` trigger, started
when the trigger appears, stopped when it disappears, is disabled or changes (then
started again with the new settings). Each consumer decodes values per
`valueDeserializer`, publishes the Starts, and commits the offsets only once the broker
acknowledged them. Execution ids derive from topic, partition and offset (a batch: each
partition's first and last offsets), so a re-delivery after a crash re-publishes the
same executions, which the executor ignores.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from headrace.config import Settings
from headrace.flow.triggers import KAFKA, KafkaTrigger
from headrace.kafka import make_consumer
from headrace.messages import TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger, TriggerCatalog
from headrace.services.scheduler.kafka_values import (
    RegistryUnavailable,
    SchemaRegistry,
    UndecodableValue,
    ValueDecoder,
    value_decoder,
)
from headrace.services.scheduler.offsets import (
    NEW_GROUP_OFFSET_RESET,
    AssignmentTracker,
    pin_new_partitions,
)
from headrace.services.scheduler.starts import publish_starts, try_build_start

log = logging.getLogger(__name__)

# How often the running consumers are compared with the catalog (which itself is
# refreshed every 2 s): a new trigger consumes within about 3 s plus the group join.
RECONCILE_INTERVAL_S = 1.0
# A consumer that crashed (say, its bootstrap servers are unreachable) is started again
# after this long, not on every reconcile: one error line per 10 s, not per second.
RESTART_DELAY_S = 10.0
POLL_TIMEOUT_MS = 200
# While a schema registry is down, the same messages are retried after 0.5 s, 1 s, 2 s…
# up to 30 s: quick recovery from a blip, one warning per 30 s in a long outage.
REGISTRY_RETRY_MIN_S = 0.5
REGISTRY_RETRY_MAX_S = 30.0


def default_group_id(declared: DeclaredTrigger) -> str:
    namespace, flow_id, trigger_id = declared.key
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


def batch_cause(topic: str, records: Iterable[ConsumerRecord]) -> tuple[str | int, ...]:
    """Each partition's first and last offsets in the batch: the batch's identity."""
    ranges: dict[int, tuple[int, int]] = {}
    for record in records:
        first, last = ranges.get(record.partition, (record.offset, record.offset))
        ranges[record.partition] = (min(first, record.offset), max(last, record.offset))
    return ("kafka-batch", topic, *(f"{p}:{a}-{b}" for p, (a, b) in sorted(ranges.items())))


def _decoded(records: Iterable[ConsumerRecord], decoder: ValueDecoder) -> list[dict[str, Any]]:
    decoded = []
    for record in records:
        try:
            decoded.append(message_data(record, decoder))
        except UndecodableValue as exc:
            log.error(
                "skipping message %s[%d]@%d: %s",
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
    return decoded


def message_starts(
    declared: DeclaredTrigger,
    records: Iterable[ConsumerRecord],
    now: datetime,
    decoder: ValueDecoder | None = None,
) -> list[TriggerEvent]:
    """One Start per decodable message (`decoder`: prepared for `records`)."""
    spec = declared.trigger.spec()
    assert isinstance(spec, KafkaTrigger)
    starts = []
    for data in _decoded(records, decoder or value_decoder(spec)):
        cause = ("kafka", data["topic"], data["partition"], data["offset"])
        start = try_build_start(declared, {"type": KAFKA, **data}, cause, now)
        if start is not None:
            starts.append(start)
    return starts


def batch_start(
    declared: DeclaredTrigger,
    records: list[ConsumerRecord],
    now: datetime,
    decoder: ValueDecoder | None = None,
) -> TriggerEvent | None:
    """One Start for the batch (None when no message in it decodes)."""
    spec = declared.trigger.spec()
    assert isinstance(spec, KafkaTrigger)
    messages = _decoded(records, decoder or value_decoder(spec))
    if not messages:
        return None
    data = {"type": KAFKA, "topic": spec.topic, "count": len(messages), "messages": messages}
    return try_build_start(declared, data, batch_cause(spec.topic, records), now)


class TriggerConsumer:
    """Consumes one trigger's topic until cancelled."""

    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, declared: DeclaredTrigger
    ) -> None:
        self._settings = settings
        self._producer = producer
        # Replaced by the manager when a new flow revision keeps the trigger unchanged.
        self.declared = declared
        self._tracker = AssignmentTracker()
        self._retry_s = REGISTRY_RETRY_MIN_S

    @property
    def spec(self) -> KafkaTrigger:
        spec = self.declared.trigger.spec()
        assert isinstance(spec, KafkaTrigger)
        return spec

    def _consumer(self) -> AIOKafkaConsumer:
        spec = self.spec
        own = spec.bootstrap_servers in (None, self._settings.kafka_bootstrap)
        settings = dataclasses.replace(
            self._settings,
            kafka_bootstrap=spec.bootstrap_servers or self._settings.kafka_bootstrap,
            # Low group timeouts suit the embedded broker; a user's Kafka refuses them.
            low_latency=self._settings.low_latency and own,
        )
        group_id = spec.group_id or default_group_id(self.declared)
        consumer = make_consumer(
            settings,
            group_id=group_id,
            client_id=group_id,
            auto_offset_reset=NEW_GROUP_OFFSET_RESET,
        )
        consumer.subscribe([spec.topic], listener=self._tracker)
        return consumer

    async def run(self) -> None:
        consumer = self._consumer()
        await consumer.start()
        namespace, flow_id, trigger_id = self.declared.key
        log.info(
            "kafka trigger %s/%s %s consumes %s", namespace, flow_id, trigger_id, self.spec.topic
        )
        try:
            async with self._registry() as registry:
                decoder = value_decoder(self.spec, registry)
                if self.spec.batch is None:
                    await self._per_message(consumer, decoder)
                else:
                    await self._per_batch(consumer, decoder)
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
        while True:
            await pin_new_partitions(consumer, self._tracker)
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            records = [r for batch in fetched.values() for r in batch]
            if not records or not await self._prepared(consumer, decoder, records):
                continue
            starts = message_starts(self.declared, records, datetime.now(UTC), decoder)
            await publish_starts(self._producer, starts)
            await _commit(consumer)

    async def _per_batch(self, consumer: AIOKafkaConsumer, decoder: ValueDecoder) -> None:
        batch = self.spec.batch
        assert batch is not None
        max_duration_s = batch.max_duration.total_seconds()
        buffer: list[ConsumerRecord] = []
        deadline = 0.0
        while True:
            await pin_new_partitions(consumer, self._tracker)
            wait_ms = POLL_TIMEOUT_MS
            if buffer:
                wait_ms = max(0, min(wait_ms, int((deadline - time.monotonic()) * 1000)))
            fetched = await consumer.getmany(
                timeout_ms=wait_ms, max_records=batch.max_records - len(buffer)
            )
            records = [r for part in fetched.values() for r in part]
            if records and not await self._prepared(consumer, decoder, records):
                records = []  # sought back to: read again; the buffer is still due
            if records and not buffer:
                deadline = time.monotonic() + max_duration_s
            buffer += records
            if not buffer:
                continue
            if len(buffer) < batch.max_records and time.monotonic() < deadline:
                continue
            start = batch_start(self.declared, buffer, datetime.now(UTC), decoder)
            await publish_starts(self._producer, [start] if start else [])
            # Explicit offsets: what the batch held, not what may be fetched beyond it.
            ends: dict[TopicPartition, int] = {}
            for record in buffer:
                tp = TopicPartition(record.topic, record.partition)
                ends[tp] = max(ends.get(tp, 0), record.offset + 1)
            await _commit(consumer, ends)
            buffer = []


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


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int] | None = None):
    try:
        await consumer.commit(offsets)
    except CommitFailedError as exc:
        # A rebalance took the partitions: their new owner re-delivers, same ids.
        log.warning("offset commit failed after a rebalance: %s", exc)


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
