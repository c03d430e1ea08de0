"""Kafka triggers through the real services: messages on a user topic start executions."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import subprocess
import sys
import time
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
from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.kafka import make_consumer
from headrace.local import LocalStack
from tests.schema_registry import RegistryServer

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


def wait_consuming(
    settings: Settings, flow_id: str, topic: str, partitions: int = 1, trigger_id: str = "messages"
) -> None:
    """A new trigger's group commits its start position once it got its partitions."""
    group = f"headrace-trigger-{NAMESPACE}-{flow_id}-{trigger_id}"
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
    group = f"headrace-trigger-{NAMESPACE}-{flow}-messages"
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
    group = f"headrace-trigger-{NAMESPACE}-{flow}-messages"
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
