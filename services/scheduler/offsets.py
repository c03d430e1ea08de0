"""Where a trigger's consumer group starts reading, and keeping that start once chosen.

A new group starts at the end of its topics ("latest"): a flow trigger must not start
downstream flows for a week of past executions, nor a new Kafka trigger one execution per
message the topic retained before it existed. "Latest" alone is a moving target, though:
until the group commits, every restart would skip what arrived while it was down. So the
first position a partition gets is committed at once (`pin_new_partitions`), and from
then on the group resumes where it stopped.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

log = logging.getLogger(__name__)

NEW_GROUP_OFFSET_RESET = "latest"


class AssignmentTracker(ConsumerRebalanceListener):
    """Remembers partitions assigned since the last `pin_new_partitions` call."""

    def __init__(self) -> None:
        self.unchecked: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.unchecked -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # No broker calls here: aiokafka is mid-rebalance; the consumer's loop pins them.
        self.unchecked |= set(assigned)


async def pin_new_partitions(consumer: AIOKafkaConsumer, tracker: AssignmentTracker) -> None:
    """Commit the current position of newly assigned partitions the group never committed."""
    if not tracker.unchecked:
        return
    assigned = consumer.assignment()
    pins: dict[TopicPartition, int] = {}
    for partition in tracker.unchecked & assigned:
        if await consumer.committed(partition) is None:
            pins[partition] = await consumer.position(partition)
    tracker.unchecked.clear()
    if pins:
        await consumer.commit(pins)
        log.info(
            "new consumer group starts at %s",
            {f"{p.topic}[{p.partition}]": o for p, o in pins.items()},
        )
