"""Kills reach every worker: a consumer outside any group follows `task-control` from its end.

A kill names one attempt, or one run of it (`run_id`: a run lost with its worker, or a
redelivered copy of an attempt that is over). The worker running it cancels it; a
worker that fetches the request later remembers the kill and reports the attempt KILLED
without running it. The
memory is bounded: kills matter only while their request may still be in flight.

A worker sees only kills published while it listens (it starts at the end of the topic):
a kill published while no worker was up is not seen. The attempt then runs to its end and
the executor, which recorded the kill, ends the task run KILLED when its result comes.
A missing `task-control` topic is an error (`KillListenerError`), never silently ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable

from aiokafka import ConsumerRecord, TopicPartition

from headrace.config import Settings
from headrace.consume import consume, decode
from headrace.errors import HeadraceError
from headrace.kafka import make_consumer
from headrace.messages import TaskKill
from headrace.topics.definitions import TASK_CONTROL

log = logging.getLogger(__name__)

# Attempts a worker remembers (as killed; as finished, in the worker); old entries go
# first. 100,000 keys are ~15 MB.
REMEMBERED_ATTEMPTS = 100_000

# (task_run_id, attempt), or (task_run_id, attempt, run_id) for one run of it.
KillKey = tuple[str, int] | tuple[str, int, str]


class KillListenerError(HeadraceError):
    """Kills cannot be followed (no `task-control` partitions): the worker must not run."""


class RecentKeys:
    """A bounded set: past `capacity` keys, the oldest are forgotten first."""

    def __init__(self, capacity: int = REMEMBERED_ATTEMPTS) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def add(self, key: Hashable) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


async def follow_kills(
    settings: Settings,
    client_id: str,
    on_kill: Callable[[TaskKill], None],
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    *,
    topic: str = TASK_CONTROL.name,
) -> None:
    """Call `on_kill` for every kill published from now on, until `stop` is set.

    Raises `KillListenerError` if `topic` has no partitions (not created: `headrace topics
    apply`). `started` is set once the end offsets are known: later kills are seen.
    """
    consumer = make_consumer(settings, group_id=None, client_id=f"{client_id}-kills")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()  # refreshes the metadata: the topic may be brand new
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KillListenerError(
                f"topic '{topic}' has no partitions, so kills cannot reach this worker:"
                " create the topics with `headrace topics apply`"
            )
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end()
        for partition in assigned:
            await consumer.position(partition)  # resolves the lazy seek now, not at a fetch
        if started is not None:
            started.set()

        async def deliver(records: list[ConsumerRecord]) -> None:
            for record in records:
                if isinstance(kill := decode(record), TaskKill):
                    on_kill(kill)

        await consume(consumer, deliver, stop)
    finally:
        await consumer.stop()
