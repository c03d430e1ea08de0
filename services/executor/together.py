"""Records that must reach the changelog together: one record batch, appended whole.

A big execution is several table records (services/executor/stored.py): its header and
the task runs a batch changed. Sent one by one, they may travel in different record
batches (the producer's batch for the partition fills up, or a crash comes between two
requests), and a recovery could then read a header without its task runs. Kafka appends
a record batch to the log whole or not at all (the embedded broker keeps its records by
batch too: its wrong end offsets, docs/architecture.md, come from that); no test kills
a broker in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


class TogetherProducer:
    """Faust's producer, with `send_together` (aiokafka's `send_batch`) beside `send`."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer  # faust.transport.drivers.aiokafka.Producer

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        return await self._producer.send(*args, **kwargs)

    async def send_together(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> asyncio.Future[Any]:
        """One future for all of `records`, resolved once the broker has them (its
        offset: the batch's first record's)."""
        # Faust keeps its aiokafka producer private; `send` itself uses this accessor.
        kafka = self._producer._ensure_producer()
        batch = kafka.create_batch()
        futures = []
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                # Over the producer's batch size (MAX_STATE_BYTES): cannot be one batch.
                log.warning(
                    "a state of %d records is over one record batch; sent in several",
                    len(records),
                )
                futures.append(await kafka.send_batch(batch, topic, partition=partition))
                batch = kafka.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a {topic} record of {len(value or b'')} bytes")
        futures.append(await kafka.send_batch(batch, topic, partition=partition))
        if len(futures) == 1:
            return futures[0]
        return asyncio.ensure_future(_last(futures))


async def _last(futures: list[asyncio.Future[Any]]) -> Any:
    return (await asyncio.gather(*futures))[-1]
