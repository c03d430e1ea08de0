"""Kafka triggers through the real services: messages on a user topic start executions."""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from fastavro import parse_schema, schemaless_writer

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.kafka import make_consumer, make_producer
from headrace.local import LocalStack
from headrace.messages import TriggerEvent
from headrace.services.scheduler.kafka_triggers import default_group_id, legacy_group_id
from headrace.services.scheduler.starts import publish_starts
from headrace.topics.definitions import MAX_VALUE_BYTES
from tests.integration.stacks import running_stack
from tests.integration.test_gateway import triggers_on_topic
from tests.integration.waiting import wait_until
from tests.schema_registry import RegistryServer

TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}
NAMESPACE = "tests.kafkatrig"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "kafka-trigger-logs") as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    return ApiClient(stack.url, timeout_s=60)


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


def group_of(flow_id: str, trigger_id: str = "messages") -> str:
    return default_group_id(NAMESPACE, flow_id, trigger_id)


def wait_consuming(
    settings: Settings, flow_id: str, topic: str, partitions: int = 1, trigger_id: str = "messages"
) -> None:
    """A new trigger's group commits its start position once it got its partitions."""
    group = group_of(flow_id, trigger_id)
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


def batch_values(runs: list[dict]) -> list[list[str]]:
    """Each execution's batch (values in offset order), sorted."""
    return sorted([m["value"] for m in run["trigger"]["messages"]] for run in runs)


def test_a_batch_of_messages_of_a_partition_starts_one_execution(
    settings: Settings, api: ApiClient
) -> None:
    topic, flow = create_topic(settings, partitions=2), flow_id()
    batch = "    valueDeserializer: STRING\n    batch: {maxRecords: 2, maxDuration: PT1S}\n"
    apply_consumer(api, flow, topic, batch)
    wait_consuming(settings, flow, topic, partitions=2)
    produce(settings, topic, b"one", b"two", partition=0)  # full: started at once
    produce(settings, topic, b"three", partition=1)  # started after a second
    runs = ended(api, flow, 2)
    assert batch_values(runs) == [["one", "two"], ["three"]]
    full = next(run for run in runs if run["trigger"]["count"] == 2)
    assert (full["trigger"]["topic"], full["trigger"]["partition"]) == (topic, 0)
    assert wait_until(lambda: "got 2" in logs(api, full["id"]))
    # Offsets advance only past what was started: everything, here.
    assert wait_until(lambda: committed(settings, group_of(flow), topic) == {0: 2, 1: 1})


def hold_a_partition(settings: Settings, group: str, topic: str, hold_s: float) -> set[int]:
    """Join `group` as a second member (another scheduler, say) for `hold_s` once given
    partitions, reading and committing nothing; return the partitions it got."""

    async def hold() -> set[int]:
        consumer = make_consumer(settings, topic, group_id=group, client_id="test-second")
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                while not consumer.assignment():
                    await asyncio.sleep(0.05)
            held = {tp.partition for tp in consumer.assignment()}
            await asyncio.sleep(hold_s)
        finally:
            await consumer.stop()  # leaves: the partitions go back to the scheduler
        return held

    return asyncio.run(hold())


def test_a_rebalance_while_batches_fill_starts_each_message_once(
    settings: Settings, api: ApiClient
) -> None:
    topic, flow = create_topic(settings, partitions=2), flow_id()
    batch = "    valueDeserializer: STRING\n    batch: {maxRecords: 100, maxDuration: PT5S}\n"
    apply_consumer(api, flow, topic, batch)
    wait_consuming(settings, flow, topic, partitions=2)
    produce(settings, topic, b"a", b"b", partition=0)
    produce(settings, topic, b"c", partition=1)
    # While the batches wait for their 5 s, a second member takes a partition, past
    # the deadline of the batches read before it joined, then leaves.
    assert len(hold_a_partition(settings, group_of(flow), topic, hold_s=7)) == 1
    wait_until(lambda: committed(settings, group_of(flow), topic) == {0: 2, 1: 1})
    runs = ended(api, flow, 2)
    assert batch_values(runs) == [["a", "b"], ["c"]]
    assert len(executions(api, flow)) == 2


def rewind(settings: Settings, group: str, topic: str, offset: int = 0) -> None:
    """Commit `offset` on partition 0 for the group, as a member (the broker refuses
    outsiders)."""

    async def commit() -> None:
        consumer = make_consumer(settings, topic, group_id=group, client_id="test-rewind")
        await consumer.start()  # joined: the stopped scheduler left the group
        try:
            async with asyncio.timeout(30):
                while not consumer.assignment():
                    await asyncio.sleep(0.05)
            await consumer.commit({TopicPartition(topic, 0): offset})
        finally:
            await consumer.stop()

    asyncio.run(commit())


def restart_scheduler(stack: LocalStack, while_stopped: Callable[[], None]) -> None:
    scheduler = next(p for p in stack.processes if p.name == "scheduler")
    stack.stop_service(scheduler)
    while_stopped()
    stack.processes.remove(scheduler)
    stack.start_service("scheduler")
    stack.wait_ready()


def test_a_redelivered_message_does_not_start_a_second_execution(
    settings: Settings, api: ApiClient, stack: LocalStack
) -> None:
    topic, flow = create_topic(settings), flow_id()
    group = group_of(flow)
    apply_consumer(api, flow, topic, "    valueDeserializer: STRING\n")
    wait_consuming(settings, flow, topic)
    produce(settings, topic, b"first")
    ended(api, flow, 1)
    wait_until(lambda: committed(settings, group, topic) == {0: 1})

    # As if the scheduler had died after publishing the Start, before committing.
    def crashed_before_committing() -> None:
        rewind(settings, group, topic)
        assert committed(settings, group, topic) == {0: 0}

    restart_scheduler(stack, crashed_before_committing)
    produce(settings, topic, b"second")
    # The partition is read in order: once `second` is committed, `first` was re-read.
    wait_until(lambda: committed(settings, group, topic) == {0: 2})
    runs = ended(api, flow, 2)
    assert sorted(e["trigger"]["value"] for e in runs) == ["first", "second"]
    assert len(executions(api, flow)) == 2
    # Ids derive from the message: a second start of `first` would re-run its execution
    # under the same id, which only its logs would show.
    for run in runs:
        lines = wait_until(lambda run=run: logs(api, run["id"]))
        assert sum(line.startswith("got ") for line in lines) == 1, lines


def test_a_batch_read_again_after_a_crash_is_cut_the_same_way(
    settings: Settings, api: ApiClient, stack: LocalStack
) -> None:
    topic, flow = create_topic(settings), flow_id()
    group = group_of(flow)
    batch = "    valueDeserializer: STRING\n    batch: {maxRecords: 2, maxDuration: PT1S}\n"
    apply_consumer(api, flow, topic, batch)
    wait_consuming(settings, flow, topic)
    produce(settings, topic, b"a")  # alone for a second: a batch of one
    ended(api, flow, 1)
    wait_until(lambda: committed(settings, group, topic) == {0: 1})

    # The scheduler died before committing; meanwhile more messages arrived. Read again,
    # `a` is a batch of its own (the next ones are stamped out of its second): the same
    # execution, ignored, and the new ones are a batch of two.
    def crashed_before_committing() -> None:
        rewind(settings, group, topic)
        produce(settings, topic, b"b", b"c")

    restart_scheduler(stack, crashed_before_committing)
    wait_until(lambda: committed(settings, group, topic) == {0: 3})
    runs = ended(api, flow, 2)
    assert batch_values(runs) == [["a"], ["b", "c"]]
    assert len(executions(api, flow)) == 2


def test_a_message_whose_start_is_too_large_is_skipped_not_blocking(
    settings: Settings, api: ApiClient
) -> None:
    topic, flow = create_topic(settings), flow_id()
    # The value, copied into an input, is in the start twice: over what `triggers` takes.
    copied = '    valueDeserializer: STRING\n    inputs:\n      order: "{{ trigger.value }}"\n'
    apply_consumer(api, flow, topic, copied)
    wait_consuming(settings, flow, topic)
    big = b'"' + b"x" * (MAX_VALUE_BYTES * 6 // 10) + b'"'  # JSON text, as `order` wants
    produce(settings, topic, big, b'"small"')
    wait_until(lambda: committed(settings, group_of(flow), topic) == {0: 2})
    [run] = ended(api, flow, 1)
    assert run["inputs"]["order"] == "small"
    assert len(executions(api, flow)) == 1


async def test_starts_too_large_for_the_topic_or_the_producer_are_skipped_alone(
    settings: Settings,
) -> None:
    namespace = f"tests.starts{uuid.uuid4().hex[:8]}"

    def start(size: int) -> TriggerEvent:
        execution_id = uuid.uuid4().hex
        return TriggerEvent(
            event_id=execution_id,
            execution_id=execution_id,
            namespace=namespace,
            flow_id="absent",
            flow_revision=1,
            inputs={"blob": "x" * size},
            time=datetime.now(UTC),
            trigger={"type": "test"},
        )

    producer = make_producer(settings, "test-starts")
    # Allows less than the topic: refuses at send() what the topic would take.
    strict = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=64_000)
    await producer.start()
    await strict.start()
    try:
        small, too_large = start(10), start(MAX_VALUE_BYTES)
        assert await publish_starts(producer, [too_large, small]) == 1
        within, over_strict = start(10), start(100_000)
        assert await publish_starts(strict, [over_strict, within]) == 1
    finally:
        await strict.stop()
        await producer.stop()
    on_topic = {event.execution_id for event in await triggers_on_topic(settings, namespace)}
    assert on_topic == {small.execution_id, within.execution_id}


def test_a_trigger_resumes_where_its_group_of_earlier_versions_stopped(
    settings: Settings, api: ApiClient
) -> None:
    topic, flow = create_topic(settings), flow_id()
    produce(settings, topic, b"started-before", b"arrived-during-the-upgrade")
    # The default group name of earlier versions had started the first message.
    rewind(settings, legacy_group_id(NAMESPACE, flow, "messages"), topic, offset=1)
    apply_consumer(api, flow, topic, "    valueDeserializer: STRING\n")
    [run] = ended(api, flow, 1)
    assert run["trigger"]["value"] == "arrived-during-the-upgrade"
    wait_until(lambda: committed(settings, group_of(flow), topic) == {0: 2})
    assert len(executions(api, flow)) == 1


# ------------------------------------------------------------------ AVRO values

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "com.shop",
    "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "placedAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
# A producer's next version: the registry has it, the flow need not know it.
ORDER_V2 = {**ORDER, "fields": [*ORDER["fields"], {"name": "channel", "type": "string"}]}
PLACED = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


def avro(sku: str, schema: dict = ORDER, **more: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(
        buffer, parse_schema(schema), {"sku": sku, "qty": 2, "placedAt": PLACED, **more}
    )
    return buffer.getvalue()


def confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def apply_avro_consumer(api: ApiClient, flow_id: str, topic: str, extra: str) -> None:
    source = f"""
id: {flow_id}
namespace: {NAMESPACE}
inputs:
  - id: sku
    type: STRING
tasks:
  - id: say
    type: log
    message: "order {{{{ trigger.value.sku }}}} x{{{{ trigger.value.qty }}}} at {{{{ trigger.value.placedAt }}}}"
triggers:
  - id: messages
    type: kafka
    topic: {topic}
    valueDeserializer: AVRO
    inputs:
      sku: "{{{{ trigger.value.sku }}}}"
{extra}"""
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )


def by_sku(runs: list[dict]) -> dict[str, dict]:
    return {run["inputs"]["sku"]: run for run in runs}


def test_avro_messages_start_executions_whose_tasks_see_the_fields(
    settings: Settings, api: ApiClient
) -> None:
    topic, flow = create_topic(settings), flow_id()
    group = group_of(flow)
    schema = orjson.dumps(ORDER).decode()
    apply_avro_consumer(api, flow, topic, f"    avroSchema: '{schema}'\n")
    wait_consuming(settings, flow, topic)
    produce(settings, topic, confluent(1, avro("A1")), b"not avro", confluent(1, avro("B2")))
    runs = by_sku(ended(api, flow, 2))
    assert sorted(runs) == ["A1", "B2"]
    first = runs["A1"]
    assert first["state"]["current"] == "SUCCESS"
    assert first["trigger"]["value"] == {
        "sku": "A1",
        "qty": 2,
        "placedAt": "2024-05-01T12:00:00.123000+00:00",
    }
    expected = "order A1 x2 at 2024-05-01T12:00:00.123000+00:00"
    assert wait_until(lambda: expected in logs(api, first["id"]))
    # The undecodable message in between was skipped and committed past.
    assert wait_until(lambda: committed(settings, group, topic) == {0: 3})
    assert len(executions(api, flow)) == 2


def test_the_documented_avro_example_runs(
    settings: Settings, api: ApiClient, tmp_path: Path
) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    section = docs.split("### Avro values", 1)[1].split("\n## ", 1)[0]
    source = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0]
    script = re.findall(r"```py\n(.*?)```", section, re.DOTALL)[0]
    topic, flow = create_topic(settings), flow_id()
    source = (
        source.replace("id: on-order", f"id: {flow}")
        .replace("namespace: company.shop", f"namespace: {NAMESPACE}")
        .replace("topic: orders", f"topic: {topic}")
    )
    api.request(
        "PUT", f"/flows/{NAMESPACE}/{flow}", body=source.encode(), content_type="application/x-yaml"
    )
    wait_consuming(settings, flow, topic, trigger_id="orders")
    (tmp_path / "produce.py").write_text(script)
    env = {**os.environ, "KAFKA": settings.kafka_bootstrap, "TOPIC": topic}
    subprocess.run([sys.executable, "produce.py"], cwd=tmp_path, env=env, check=True, timeout=60)
    [run] = ended(api, flow, 1)
    assert run["state"]["current"] == "SUCCESS" and run["inputs"] == {"sku": "A1"}
    value = run["trigger"]["value"]
    assert (value["qty"], value["note"]) == (2, None)
    placed = datetime.fromisoformat(value["placedAt"])
    assert abs(datetime.now(UTC) - placed) < timedelta(minutes=5)
    assert wait_until(lambda: f"order A1 x2 placed {value['placedAt']}" in logs(api, run["id"]))


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_a_schema_registry_gives_the_writer_schemas_and_an_outage_skips_nothing(
    settings: Settings, api: ApiClient, registry: RegistryServer
) -> None:
    registry.register(42, ORDER)
    topic, flow = create_topic(settings), flow_id()
    group = group_of(flow)
    apply_avro_consumer(api, flow, topic, f"    schemaRegistryUrl: {registry.url}\n")
    wait_consuming(settings, flow, topic)

    # A known id decodes; an id the registry answers 404 for is skipped, committed past.
    produce(settings, topic, confluent(42, avro("A1")), confluent(99, avro("X9")))
    [first] = ended(api, flow, 1)
    assert first["inputs"] == {"sku": "A1"}
    assert wait_until(lambda: committed(settings, group, topic) == {0: 2})
    assert registry.asked(99) == 1

    # The registry fails while a new schema id arrives: the consumer retries, commits
    # nothing and starts nothing, not even the message behind it whose schema it knows.
    registry.available = False
    registry.register(43, ORDER_V2)
    produce(settings, topic, confluent(43, avro("C3", ORDER_V2, channel="web")))
    produce(settings, topic, confluent(42, avro("D4")))
    wait_until(lambda: registry.asked(43) >= 2)
    assert committed(settings, group, topic) == {0: 2}
    assert len(executions(api, flow)) == 1

    registry.available = True
    runs = by_sku(ended(api, flow, 3))
    assert sorted(runs) == ["A1", "C3", "D4"]
    assert runs["C3"]["trigger"]["value"]["channel"] == "web"
    assert wait_until(lambda: committed(settings, group, topic) == {0: 4})
    assert registry.asked(42) == 1  # cached by id
