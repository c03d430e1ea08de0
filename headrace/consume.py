"""The consume loop of every plain-aiokafka service: fetch, handle, until stopped.

The worker, its kill listener, the indexer, flow triggers and Kafka triggers all run it.
What they share lives here: the poll, its timeout (how often the loop looks at `stop`),
records flattened in fetch order, and the fetch wait that follows the traffic (their
consumers come from `headrace.kafka.make_consumer`). What they do not share stays theirs:
decoding, what a batch causes, and when offsets are committed (after what the records
caused was produced or written: docs/architecture.md, "Delivery").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from headrace import codec
from headrace.errors import CodecError
from headrace.messages import Message

log = logging.getLogger(__name__)

# How long one fetch waits for records before the loop looks at `stop` again.
POLL_TIMEOUT_MS = 200


async def consume(
    consumer: AIOKafkaConsumer,
    handle: Callable[[list[ConsumerRecord]], Awaitable[None]],
    stop: asyncio.Event | None = None,
    *,
    before_fetch: Callable[[], Awaitable[None]] | None = None,
    timeout_ms: Callable[[], int] = lambda: POLL_TIMEOUT_MS,
    max_records: Callable[[], int | None] = lambda: None,
    handle_empty: bool = False,
) -> None:
    """Fetch and `handle` records until `stop` is set (or, without one, until cancelled).

    `before_fetch` runs before each fetch (a rebalance's new partitions to pin, room to
    wait for); `timeout_ms` and `max_records` are asked before each fetch; `handle` gets
    every non-empty fetch, and the empty ones too with `handle_empty` (deadlines to keep).
    """
    while stop is None or not stop.is_set():
        if before_fetch is not None:
            await before_fetch()
            if stop is not None and stop.is_set():
                return  # set while it waited (say, for room): fetch nothing more
        fetched = await consumer.getmany(timeout_ms=timeout_ms(), max_records=max_records())
        records = [record for batch in fetched.values() for record in batch]
        if records or handle_empty:
            await handle(records)


def decode(record: ConsumerRecord) -> Message | None:
    """The record's message, or None (logged) when it is not one of ours."""
    try:
        return codec.decode(record.value)
    except CodecError as exc:
        log.error(
            "skipping undecodable message %s[%d]@%d: %s",
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        return None
