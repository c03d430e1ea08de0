"""Kafka triggers through the real services: messages on a user topic start executions."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from headrace.api_client import ApiClient, ApiError
from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.kafka import make_consumer
from headrace.local import LocalStack

TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}
NAMESPACE = "tests.kafkatrig"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    asyncio.run(migrate_url(settings.database_url))
    local = LocalStack(
        dataclasses.replace(settings, gateway_port=free_port()),
        log_dir=tmp_path_factory.mktemp("kafka-trigger-logs"),
    )
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    return ApiClient(stack.url, timeout_s=60)


def wait_until(condition: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def create_topic(settings: Settings, partitions: int = 1) -> str:
    name = f"user-{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    return name


def produce(settings: Settings, topic: str, *values: bytes, partition: int | None = None) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(
                    topic, value, key=b"k", partition=partition, headers=[("h", b"v")]
                )
        finally:
            await producer.stop()

    asyncio.run(send())


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic` (partitions without one left out)."""

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            offsets = {p: await consumer.committed(TopicPartition(topic, p)) for p in partitions}
        finally:
            await consumer.stop()
        return {p: offset for p, offset in offsets.items() if offset is not None}

    return asyncio.run(read())


def wait_consuming(settings: Settings, flow_id: str, topic: str, partitions: int = 1) -> None:
    """A new trigger's group commits its start position once it got its partitions."""
    group = f"headrace-trigger-{NAMESPACE}-{flow_id}-messages"
    wait_until(lambda: len(committed(settings, group, topic)) == partitions)


def apply_consumer(api: ApiClient, flow_id: str, topic: str, extra: str = "") -> None:
    source = f"""
id: {flow_id}
namespace: {NAMESPACE}
inputs:
  - id: order
    type: JSON
    required: false
tasks:
  - id: say
    type: log
    message: "got {{{{ trigger.value | default(trigger.count) }}}}"
triggers:
  - id: messages
    type: kafka
    topic: {topic}
{extra}"""
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )


def executions(api: ApiClient, flow_id: str) -> list[dict]:
    page = api.request("GET", f"/executions?namespace={NAMESPACE}&flowId={flow_id}&size=100")
    return page["results"]


def ended(api: ApiClient, flow_id: str, count: int) -> list[dict]:
    def done() -> list[dict] | None:
        found = [e for e in executions(api, flow_id) if e["state"]["current"] in TERMINAL]
        return found if len(found) >= count else None

    return wait_until(done)


def logs(api: ApiClient, execution_id: str) -> list[str]:
    try:
        return [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise


def flow_id() -> str:
    return f"consume-{uuid.uuid4().hex[:8]}"


def test_each_message_starts_an_execution_that_sees_it(settings: Settings, api: ApiClient) -> None:
    topic, flow = create_topic(settings), flow_id()
    apply_consumer(api, flow, topic, '    inputs:\n      order: "{{ trigger.value }}"\n')
    wait_consuming(settings, flow, topic)
    produce(settings, topic, orjson.dumps({"sku": "A1"}), orjson.dumps({"sku": "B2"}))
    runs = ended(api, flow, 2)
    assert sorted(e["inputs"]["order"]["sku"] for e in runs) == ["A1", "B2"]
    first = next(e for e in runs if e["trigger"]["value"] == {"sku": "A1"})
    assert first["state"]["current"] == "SUCCESS"
    assert first["trigger"]["topic"] == topic
    assert first["trigger"]["key"] == "k" and first["trigger"]["headers"] == {"h": "v"}
    assert wait_until(lambda: any("A1" in line for line in logs(api, first["id"])))


def test_a_batch_of_messages_starts_one_execution(settings: Settings, api: ApiClient) -> None:
    topic, flow = create_topic(settings, partitions=2), flow_id()
    batch = "    valueDeserializer: STRING\n    batch: {maxRecords: 3, maxDuration: PT30S}\n"
    apply_consumer(api, flow, topic, batch)
    wait_consuming(settings, flow, topic, partitions=2)
    produce(settings, topic, b"one", b"two", partition=0)
    produce(settings, topic, b"three", partition=1)
    [run] = ended(api, flow, 1)
    assert run["trigger"]["count"] == 3
    assert sorted(m["value"] for m in run["trigger"]["messages"]) == ["one", "three", "two"]
    assert wait_until(lambda: "got 3" in logs(api, run["id"]))
    # Offsets advance only past what was started: everything, here.
    group = f"headrace-trigger-{NAMESPACE}-{flow}-messages"
    assert wait_until(lambda: committed(settings, group, topic) == {0: 2, 1: 1})


def rewind(settings: Settings, group: str, topic: str) -> None:
    """Commit offset 0 for the group, as a member (the broker refuses outsiders)."""

    async def commit() -> None:
        consumer = make_consumer(settings, topic, group_id=group, client_id="test-rewind")
        await consumer.start()  # joined: the stopped scheduler left the group
        try:
            await consumer.commit({TopicPartition(topic, 0): 0})
        finally:
            await consumer.stop()

    asyncio.run(commit())


def test_a_redelivered_message_does_not_start_a_second_execution(
    settings: Settings, api: ApiClient, stack: LocalStack
) -> None:
    topic, flow = create_topic(settings), flow_id()
    group = f"headrace-trigger-{NAMESPACE}-{flow}-messages"
    apply_consumer(api, flow, topic, "    valueDeserializer: STRING\n")
    wait_consuming(settings, flow, topic)
    produce(settings, topic, b"first")
    ended(api, flow, 1)
    wait_until(lambda: committed(settings, group, topic) == {0: 1})

    # As if the scheduler had died after publishing the Start, before committing.
    scheduler = next(p for p in stack.processes if p.name == "scheduler")
    stack.stop_service(scheduler)
    rewind(settings, group, topic)
    assert committed(settings, group, topic) == {0: 0}
    stack.processes.remove(scheduler)
    stack.start_service("scheduler")
    stack.wait_ready()

    produce(settings, topic, b"second")
    # The partition is read in order: once `second` is committed, `first` was re-read.
    wait_until(lambda: committed(settings, group, topic) == {0: 2})
    runs = ended(api, flow, 2)
    assert sorted(e["trigger"]["value"] for e in runs) == ["first", "second"]
    assert len(executions(api, flow)) == 2
