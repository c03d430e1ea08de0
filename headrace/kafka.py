"""aiokafka clients configured the one way every service wants them.

Producers: acks=all, a short linger so that bursts batch without adding visible latency,
no idempotence (the embedded broker refuses InitProducerId; docs/architecture.md: at-least-once,
consumers de-duplicate). Consumers: manual commits (a message is committed only once
what it caused has been produced), and a fetch wait that follows the traffic
(`headrace.fetch_wait`): short while records flow, long when idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from headrace import codec
from headrace.config import Settings
from headrace.fetch_wait import FetchWait
from headrace.messages import Message
from headrace.metrics import watch_lag
from headrace.topics.definitions import MAX_MESSAGE_BYTES

# 1 ms: enough for a burst of sends from one event-loop turn to share a batch.
PRODUCER_LINGER_MS = 1


def make_producer(
    settings: Settings, client_id: str, *, idempotent: bool = False
) -> AIOKafkaProducer:
    """`idempotent`: a retried send is never written twice; the embedded broker refuses
    such producers (`start` fails), Apache Kafka has them."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        linger_ms=PRODUCER_LINGER_MS,
        enable_idempotence=idempotent,
        # A batch the topic takes whole (a refused batch fails every send in it), and a
        # message too large for any topic refused at send(), before the broker sees it.
        max_batch_size=MAX_MESSAGE_BYTES,
        max_request_size=MAX_MESSAGE_BYTES,
    )


class AdaptiveConsumer(AIOKafkaConsumer):
    """aiokafka's consumer whose fetch wait follows its traffic (`FetchWait`).

    `not_traffic`: records that do not make it busy (fences, say: a reader that waits
    for its own fence must not set every other reader of the topic polling)."""

    def __init__(
        self,
        *topics: str,
        fetch_wait: FetchWait,
        not_traffic: Callable[[ConsumerRecord], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["fetch_max_wait_ms"] = fetch_wait.busy_ms
        super().__init__(*topics, **kwargs)
        self._fetch_wait = fetch_wait
        self._not_traffic = not_traffic

    @property
    def fetch_wait_ms(self) -> int:
        """The wait the next fetch request asks the broker for."""
        return self._fetcher._fetch_max_wait_ms

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        fetched = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        traffic = bool(fetched)
        if traffic and self._not_traffic is not None:
            ignored = self._not_traffic
            traffic = any(not ignored(r) for records in fetched.values() for r in records)
        # Paused partitions mean the caller has work in hand: not a quiet spell.
        self.adapt_fetch_wait(traffic or bool(self.paused()))
        return fetched

    def adapt_fetch_wait(self, busy: bool) -> None:
        """Set the next fetch's wait after one that was `busy` (called by `getmany`, and by
        the executor's Faust driver, which reads aiokafka's fetcher directly)."""
        # aiokafka reads this for each fetch request it builds (checked by
        # tests/integration/test_fetch_wait.py against the embedded broker).
        self._fetcher._fetch_max_wait_ms = self._fetch_wait.after_fetch(busy, time.monotonic())


def make_consumer(
    settings: Settings,
    *topics: str,
    group_id: str | None,
    client_id: str,
    auto_offset_reset: str = "earliest",  # where a group without committed offsets starts
    not_traffic: Callable[[ConsumerRecord], bool] | None = None,
) -> AdaptiveConsumer:
    """A service's consumer; `/metrics` reports its lag (headrace.metrics)."""
    consumer = AdaptiveConsumer(
        *topics,
        fetch_wait=settings.fetch_wait(),
        not_traffic=not_traffic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        # Group timeouts: the embedded broker answers JoinGroup after about half of them.
        session_timeout_ms=4_000 if settings.low_latency else 45_000,
        heartbeat_interval_ms=500 if settings.low_latency else 3_000,
        rebalance_timeout_ms=4_000 if settings.low_latency else 60_000,
        max_poll_records=2_000,
    )
    watch_lag(consumer)
    return consumer


async def send(producer: AIOKafkaProducer, topic: str, message: Message) -> None:
    """Queue one message, keyed by its execution id; awaits only the local enqueue."""
    await producer.send(topic, codec.encode(message), key=message.execution_id.encode())
