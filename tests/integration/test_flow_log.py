"""The `flows` topic: revisions published as they are stored, read back by `FlowLog`."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from headrace import codec
from headrace.config import Settings
from headrace.db.flows import FlowRepository
from headrace.flow_log import FlowLog, FlowNotFound, TopicRevisionLog, publish_missing
from headrace.messages import FlowRevision, TriggerSwitch
from headrace.topics.definitions import FLOWS


async def wait_for(condition, timeout_s: float = 10.0) -> None:
    """Let the event loop run until `condition` holds (the caller asserts it after)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def source(namespace: str, message: str) -> str:
    return (
        f"id: f\nnamespace: {namespace}\ntasks:\n  - id: say\n    type: log\n"
        f"    message: {message}\n"
    )


@pytest.fixture
def pool(migrated_pool: asyncpg.Pool) -> asyncpg.Pool:
    return migrated_pool


@pytest.fixture
def producer(flows_producer: AIOKafkaProducer) -> AIOKafkaProducer:
    return flows_producer


@pytest.fixture
def follower(flow_log: FlowLog) -> FlowLog:
    return flow_log


@pytest.fixture
def namespace() -> str:
    return f"test.flowlog{uuid.uuid4().hex[:8]}"


async def test_a_revision_is_readable_as_soon_as_its_save_returned(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, follower: FlowLog, namespace: str
) -> None:
    """A follower started before the save finds it at once: a miss reads to a fence."""
    flows = FlowRepository(pool, TopicRevisionLog(producer))
    assert await flows.save(namespace, "f", source(namespace, "one")) == (1, True)
    flow = await follower.get(namespace, "f", 1)
    assert flow.tasks[0].properties["message"] == "one"
    assert await follower.latest_revision(namespace, "f") == 1

    await flows.save(namespace, "f", source(namespace, "two"))
    assert (await follower.get(namespace, "f", 2)).tasks[0].properties["message"] == "two"
    with pytest.raises(FlowNotFound, match="revision 7 not found"):
        await follower.get(namespace, "f", 7)
    assert await follower.latest_revision(namespace, "nope") is None


async def test_a_new_follower_reads_every_revision_and_deletions(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, settings: Settings, namespace: str
) -> None:
    flows = FlowRepository(pool, TopicRevisionLog(producer))
    await flows.save(namespace, "f", source(namespace, "one"))
    await flows.save(namespace, "f", source(namespace, "two"))
    assert await flows.delete(namespace, "f")
    follower = FlowLog(settings, "test-flow-log-late")
    await follower.start()
    try:
        # Executions still running revision 1 keep it; the deleted flow has no latest.
        assert (await follower.get(namespace, "f", 1)).tasks[0].properties["message"] == "one"
        assert await follower.latest_revision(namespace, "f") is None
        with pytest.raises(FlowNotFound):
            await follower.get(namespace, "f", 3)  # the tombstone revision
    finally:
        await follower.stop()


class Refusing(TopicRevisionLog):
    async def publish(self, revision: FlowRevision) -> None:
        raise RuntimeError("broker down")


class FailingAfterPublish(TopicRevisionLog):
    """Publishes, then makes the save fail: its transaction never commits."""

    async def publish(self, revision: FlowRevision) -> None:
        await super().publish(revision)
        raise RuntimeError("the transaction failed after the publish")


async def test_a_save_the_broker_refuses_stores_nothing(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, namespace: str
) -> None:
    flows = FlowRepository(pool, Refusing(producer))
    with pytest.raises(RuntimeError, match="broker down"):
        await flows.save(namespace, "f", source(namespace, "one"))
    assert await flows.get(namespace, "f") is None


async def test_a_revision_whose_save_failed_after_its_publish_is_retracted(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, follower: FlowLog, namespace: str
) -> None:
    with pytest.raises(RuntimeError, match="after the publish"):
        await FlowRepository(pool, FailingAfterPublish(producer)).save(
            namespace, "f", source(namespace, "never")
        )
    assert await FlowRepository(pool).get(namespace, "f") is None
    await follower.sync()  # it may have read the revision before its retraction
    with pytest.raises(FlowNotFound):
        await follower.get(namespace, "f", 1)
    assert await follower.latest_revision(namespace, "f") is None
    # The next save takes the number again, and readers see it.
    await FlowRepository(pool, TopicRevisionLog(producer)).save(
        namespace, "f", source(namespace, "real")
    )
    assert (await follower.get(namespace, "f", 1)).tasks[0].properties["message"] == "real"


async def test_revisions_stored_without_the_topic_are_published_once(
    pool: asyncpg.Pool,
    producer: AIOKafkaProducer,
    follower: FlowLog,
    settings: Settings,
    namespace: str,
) -> None:
    """Revisions saved before `flows` existed (or a topic that lost its data): the
    gateway publishes what the topic lacks when it starts."""
    unpublished = FlowRepository(pool)
    await unpublished.save(namespace, "f", source(namespace, "old"))
    stored = await unpublished.all_revisions()
    mine = [r for r in stored if r.namespace == namespace]
    assert [r.revision for r in mine] == [1]
    checker = FlowLog(settings, "test-flow-log-check")
    await checker.start()
    try:
        assert await publish_missing(checker, stored, [], producer) >= 1
        assert await publish_missing(checker, stored, [], producer) == 0  # it knows them
    finally:
        await checker.stop()
    assert (await follower.get(namespace, "f", 1)).tasks[0].properties["message"] == "old"


class CuttingTheConnection(TopicRevisionLog):
    """Publishes, then kills the saving session's backend: its commit fails, and whether
    the revision was stored is for the repository to find out."""

    def __init__(self, producer: AIOKafkaProducer, pool: asyncpg.Pool) -> None:
        super().__init__(producer)
        self._pool = pool

    async def publish(self, revision: FlowRevision) -> None:
        await super().publish(revision)
        # The session holding the flow's advisory lock is the one saving it.
        await self._pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks"
            " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
        )


async def test_a_commit_lost_with_its_connection_is_settled_under_the_lock(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, follower: FlowLog, namespace: str
) -> None:
    flows = FlowRepository(pool, CuttingTheConnection(producer, pool))
    with pytest.raises(Exception):  # noqa: B017 (whatever asyncpg makes of the cut)
        await flows.save(namespace, "f", source(namespace, "lost"))
    assert await FlowRepository(pool).get(namespace, "f") is None  # not stored...
    await follower.sync()
    with pytest.raises(FlowNotFound):  # ...so retracted
        await follower.get(namespace, "f", 1)


async def publish(producer: AIOKafkaProducer, switch: TriggerSwitch) -> None:
    await producer.send_and_wait(FLOWS.name, codec.encode(switch), key=switch.key.encode())


def switch(namespace: str, trigger_id: str, disabled: bool, second: int) -> TriggerSwitch:
    """A switch of version `second` (PostgreSQL's `updated_at`)."""
    return TriggerSwitch(
        namespace, "f", trigger_id, disabled, datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)
    )


async def test_each_triggers_newest_switch_wins_whatever_order_the_records_come_in(
    producer: AIOKafkaProducer, follower: FlowLog, settings: Settings, namespace: str
) -> None:
    await publish(producer, switch(namespace, "nightly", True, 1))
    await publish(producer, switch(namespace, "hook", True, 2))
    await publish(producer, switch(namespace, "hook", False, 3))
    await publish(producer, switch(namespace, "late", False, 5))
    await publish(producer, switch(namespace, "late", True, 4))  # crossed on the way
    await follower.sync()
    assert follower.switched_off(namespace, "f") == {"nightly"}

    # A process that published a switch knows it at once; the older records it then
    # reads (a new reader reads all of them) do not undo it.
    reader = FlowLog(settings, "test-flow-log-noting")
    await reader.start()
    try:
        reader.note(switch(namespace, "nightly", False, 10))
        assert reader.switched_off(namespace, "f") == set()
        await publish(producer, switch(namespace, "nightly", True, 9))  # older, read later
        await reader.sync()
        assert reader.switched_off(namespace, "f") == set()
        await publish(producer, switch(namespace, "nightly", True, 11))  # newer
        await reader.sync()
        assert reader.switched_off(namespace, "f") == {"nightly"}
    finally:
        await reader.stop()


async def test_switches_stored_without_the_topic_are_published_once(
    producer: AIOKafkaProducer, follower: FlowLog, settings: Settings, namespace: str
) -> None:
    await publish(producer, switch(namespace, "hook", True, 1))
    await follower.sync()
    # PostgreSQL: "nightly" switched off, never published; "hook" switched on since.
    stored = [switch(namespace, "nightly", True, 2), switch(namespace, "hook", False, 3)]

    assert await publish_missing(follower, [], stored, producer) == 2
    assert follower.switched_off(namespace, "f") == {"nightly"}
    assert await publish_missing(follower, [], stored, producer) == 0
    reader = FlowLog(settings, "test-flow-log-reader")  # the topic itself says so
    await reader.start()
    try:
        assert reader.switched_off(namespace, "f") == {"nightly"}
    finally:
        await reader.stop()


async def test_a_reader_that_keeps_up_says_when_it_last_was_up_to_date(
    follower: FlowLog,
) -> None:
    """The gateway's `/healthz` reads `synced_at`: a follower that stalls without failing
    would otherwise serve old flows and switches for good."""
    assert follower.synced_at is not None  # `start` reads the topic up to a fence
    before = follower.synced_at
    keeping_up = asyncio.create_task(follower.keep_synced(1.0))
    try:
        await wait_for(lambda: follower.synced_at > before)
    finally:
        keeping_up.cancel()
    assert follower.synced_at > before
