"""The `flows` topic read back by `FlowLog`: revisions, retractions and switches."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from headrace import codec
from headrace.broker import start_embedded_broker
from headrace.config import Settings
from headrace.errors import HeadraceError
from headrace.flow_log import FlowLog, FlowNotFound, publish_missing
from headrace.flow_store import FlowStore
from headrace.messages import FlowRevision, TriggerSwitch
from headrace.topics.definitions import FLOWS
from tests.integration.stacks import reading_flows


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
def producer(flows_producer: AIOKafkaProducer) -> AIOKafkaProducer:
    return flows_producer


@pytest.fixture
def follower(flow_log: FlowLog) -> FlowLog:
    return flow_log


@pytest.fixture
def namespace() -> str:
    return f"test.flowlog{uuid.uuid4().hex[:8]}"


async def test_a_revision_is_readable_as_soon_as_its_save_returned(
    settings: Settings, follower: FlowLog, namespace: str
) -> None:
    """A follower started before the save finds it at once: a miss reads to a fence."""
    async with reading_flows(settings, "test-flow-log-gateway") as gateway:
        flows = FlowStore(gateway)
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
    follower: FlowLog, settings: Settings, namespace: str
) -> None:
    flows = FlowStore(follower)
    await flows.save(namespace, "f", source(namespace, "one"))
    await flows.save(namespace, "f", source(namespace, "two"))
    assert await flows.delete(namespace, "f")
    async with reading_flows(settings, "test-flow-log-late") as late:
        # Executions still running revision 1 keep it; the deleted flow has no latest.
        assert (await late.get(namespace, "f", 1)).tasks[0].properties["message"] == "one"
        assert await late.latest_revision(namespace, "f") is None
        with pytest.raises(FlowNotFound):
            await late.get(namespace, "f", 3)  # the tombstone revision
        # Created at the writer's time, numbered alike: the same records everywhere.
        assert of_namespace(late, namespace) == of_namespace(follower, namespace)
        assert [r.revision for r in of_namespace(late, namespace)] == [1, 2, 3]


def of_namespace(reader: FlowLog, namespace: str) -> list[FlowRevision]:
    return sorted(
        (r for r in reader.revisions() if r.namespace == namespace), key=lambda r: r.revision
    )


def revision(namespace: str, number: int, message: str) -> FlowRevision:
    return FlowRevision(
        namespace, "f", number, source(namespace, message), datetime(2026, 1, 1, tzinfo=UTC)
    )


async def test_revisions_stored_without_the_topic_are_published_once(
    producer: AIOKafkaProducer, follower: FlowLog, settings: Settings, namespace: str
) -> None:
    """Revisions PostgreSQL holds and the topic lacks (stored by a release that kept flows
    there, or a topic that lost its data): the gateway publishes them when it starts,
    with their numbers, and the next change is numbered after them."""
    stored = [revision(namespace, 1, "old"), revision(namespace, 2, "older")]
    async with reading_flows(settings, "test-flow-log-check") as checker:
        assert await publish_missing(checker, stored, []) == 2
        assert await publish_missing(checker, stored, []) == 0  # it knows them
    assert (await follower.get(namespace, "f", 1)).tasks[0].properties["message"] == "old"
    assert await FlowStore(follower).save(namespace, "f", source(namespace, "new")) == (3, True)


async def test_a_retracted_revision_is_forgotten(
    producer: AIOKafkaProducer, follower: FlowLog, namespace: str
) -> None:
    """A release that kept flows in PostgreSQL retracted a revision whose transaction
    failed after its publish: a record with no value under its key."""
    never = revision(namespace, 1, "never")
    await producer.send_and_wait(FLOWS.name, codec.encode(never), key=never.key.encode())
    await producer.send_and_wait(FLOWS.name, None, key=never.key.encode())
    await follower.sync()
    with pytest.raises(FlowNotFound):
        await follower.get(namespace, "f", 1)
    assert await follower.latest_revision(namespace, "f") is None
    # The next save takes the number again, and readers see it.
    assert await FlowStore(follower).save(namespace, "f", source(namespace, "real")) == (1, True)
    assert (await follower.get(namespace, "f", 1)).tasks[0].properties["message"] == "real"


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
    async with reading_flows(settings, "test-flow-log-noting") as reader:
        reader.note(switch(namespace, "nightly", False, 10))
        assert reader.switched_off(namespace, "f") == set()
        await publish(producer, switch(namespace, "nightly", True, 9))  # older, read later
        await reader.sync()
        assert reader.switched_off(namespace, "f") == set()
        await publish(producer, switch(namespace, "nightly", True, 11))  # newer
        await reader.sync()
        assert reader.switched_off(namespace, "f") == {"nightly"}


async def test_switches_stored_without_the_topic_are_published_once(
    producer: AIOKafkaProducer, follower: FlowLog, settings: Settings, namespace: str
) -> None:
    await publish(producer, switch(namespace, "hook", True, 1))
    await follower.sync()
    # PostgreSQL: "nightly" switched off, never published; "hook" switched on since.
    stored = [switch(namespace, "nightly", True, 2), switch(namespace, "hook", False, 3)]

    assert await publish_missing(follower, [], stored) == 2
    assert follower.switched_off(namespace, "f") == {"nightly"}
    assert await publish_missing(follower, [], stored) == 0
    # The topic itself says so.
    async with reading_flows(settings, "test-flow-log-reader") as reader:
        assert reader.switched_off(namespace, "f") == {"nightly"}


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


async def test_a_flows_topic_of_several_partitions_is_refused_saying_how_to_mend_it() -> None:
    """An earlier release made `flows` with the executor topics' partitions: changes
    spread over them would have no one order, and readers could number them apart."""
    broker = start_embedded_broker()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(FLOWS.name, 2, 1)])
        finally:
            await admin.close()
        reader = FlowLog(Settings(kafka_bootstrap=broker.bootstrap, low_latency=True), "test")
        with pytest.raises(HeadraceError, match=r"has 2 partitions.*headrace topics apply"):
            await reader.start()
    finally:
        broker.stop()


async def test_a_broker_that_gives_no_idempotent_producer_is_refused_off_the_embedded_one(
    settings: Settings,
) -> None:
    """Outside `server local` (`low_latency` off), a retried change written twice could
    be compacted into another place: the reader refuses to start without the producer
    that prevents it. The embedded broker is such a broker, here taken for another."""
    reader = FlowLog(replace(settings, low_latency=False), "test-not-idempotent")
    with pytest.raises(HeadraceError, match="did not give an idempotent producer"):
        await reader.start()
