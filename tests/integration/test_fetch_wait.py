"""The adaptive fetch wait takes effect on the embedded broker.

The policy itself is tested in tests/unit/test_fetch_wait.py; here, that aiokafka really
asks the broker for the wait the policy chose (`AdaptiveConsumer` sets a private attribute
of aiokafka's fetcher: an aiokafka upgrade that renames it fails this test). The bound on
the hop is generous: a quiet consumer's 2 s wait holds a fetch for hundreds of ms, a
busy one's 5 ms for a few.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from aiokafka import AIOKafkaProducer

from headrace.broker import EmbeddedBroker
from headrace.fetch_wait import FetchWait
from headrace.kafka import AdaptiveConsumer
from tests.integration.stacks import new_topic

QUIET_AFTER_S = 0.3
BUSY_MS, IDLE_MS = 5, 2_000


async def _poll_until_quiet(consumer: AdaptiveConsumer) -> None:
    deadline = time.monotonic() + 10
    while consumer.fetch_wait_ms != IDLE_MS:
        assert time.monotonic() < deadline, "the consumer never went quiet"
        assert not await consumer.getmany(timeout_ms=100)


async def _hop(producer: AIOKafkaProducer, consumer: AdaptiveConsumer, topic: str) -> float:
    """Seconds from sending one record to the consumer having it."""
    started = time.monotonic()
    await producer.send_and_wait(topic, b"x")
    while not await consumer.getmany(timeout_ms=5_000):
        assert time.monotonic() - started < 10, "the record never came"
    return time.monotonic() - started


def test_the_wait_is_long_when_quiet_and_short_once_records_flow(broker: EmbeddedBroker) -> None:
    async def scenario() -> None:
        topic = await new_topic(broker.bootstrap, "fetch-wait", 1)
        policy = FetchWait(busy_ms=BUSY_MS, idle_ms=IDLE_MS, quiet_after_s=QUIET_AFTER_S)
        consumer = AdaptiveConsumer(
            topic, fetch_wait=policy, bootstrap_servers=broker.bootstrap, group_id=None
        )
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            await consumer.seek_to_end()
            assert consumer.fetch_wait_ms == BUSY_MS  # starting is not a quiet spell
            await _poll_until_quiet(consumer)
            for _ in range(5):  # fetches with the long wait are what is in flight now
                assert not await consumer.getmany(timeout_ms=100)

            await _hop(producer, consumer, topic)  # wakes it: slow, not measured
            assert consumer.fetch_wait_ms == BUSY_MS
            hops = [await _hop(producer, consumer, topic) for _ in range(7)]
            assert statistics.median(hops) < 0.15, hops

            await _poll_until_quiet(consumer)  # and quiet again once nothing comes
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(scenario())


def test_records_that_are_not_traffic_leave_a_quiet_consumer_quiet(
    broker: EmbeddedBroker,
) -> None:
    """A reader of `flows` waiting for its own fence must not set every other reader
    polling: fences are read, but the wait stays long."""

    async def scenario() -> None:
        topic = await new_topic(broker.bootstrap, "fetch-wait-fences", 1)
        policy = FetchWait(busy_ms=BUSY_MS, idle_ms=IDLE_MS, quiet_after_s=QUIET_AFTER_S)
        consumer = AdaptiveConsumer(
            topic,
            fetch_wait=policy,
            not_traffic=lambda record: record.key == b"fence",
            bootstrap_servers=broker.bootstrap,
            group_id=None,
        )
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        await consumer.start()
        await producer.start()
        try:
            await consumer.seek_to_end()
            await _poll_until_quiet(consumer)
            await producer.send_and_wait(topic, b"", key=b"fence")
            async with asyncio.timeout(10):
                fetched = await consumer.getmany(timeout_ms=5_000)
                while not fetched:
                    fetched = await consumer.getmany(timeout_ms=5_000)
            assert [r.key for rs in fetched.values() for r in rs] == [b"fence"]
            assert consumer.fetch_wait_ms == IDLE_MS

            await producer.send_and_wait(topic, b"x", key=b"revision")  # traffic: wakes it
            async with asyncio.timeout(10):
                while not await consumer.getmany(timeout_ms=5_000):
                    pass
            assert consumer.fetch_wait_ms == BUSY_MS
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(scenario())
