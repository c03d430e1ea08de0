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
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

log = logging.getLogger(__name__)

NEW_GROUP_OFFSET_RESET = "latest"

# Start offsets, for some of the given partitions, other than their current position.
InheritedOffsets = Callable[[set[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


class AssignmentTracker(ConsumerRebalanceListener):
    """Remembers partitions assigned since the last `pin_new_partitions` call."""

    def __init__(self) -> None:
        self.unchecked: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.unchecked -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # No broker calls here: aiokafka is mid-rebalance; the consumer's loop pins them.
        self.unchecked |= set(assigned)


async def pin_new_partitions(
    consumer: AIOKafkaConsumer,
    tracker: AssignmentTracker,
    inherited: InheritedOffsets | None = None,
) -> None:
    """Commit the current position of newly assigned partitions the group never committed.

    `inherited` may give other start offsets for some of them (say, where the group this
    one replaces stopped): those are sought to and committed instead.
    """
    if not tracker.unchecked:
        return
    checking = tracker.unchecked & consumer.assignment()
    try:
        pins: dict[TopicPartition, int] = {}
        for partition in checking:
            if await consumer.committed(partition) is None:
                pins[partition] = await consumer.position(partition)
        if pins and inherited is not None:
            for partition, offset in (await inherited(set(pins))).items():
                consumer.seek(partition, offset)
                pins[partition] = offset
        if pins:
            await consumer.commit(pins)
    except (CommitFailedError, IllegalStateError) as exc:
        # Revoked meanwhile: still unchecked, pinned once assigned again.
        log.warning("start position not committed, a rebalance is under way: %s", exc)
        return
    # Not clear(): partitions assigned during the awaits above are still to check.
    tracker.unchecked -= checking
    if pins:
        log.info(
            "new consumer group starts at %s",
            {f"{p.topic}[{p.partition}]": o for p, o in pins.items()},
        )
