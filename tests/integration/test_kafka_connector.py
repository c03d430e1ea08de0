"""`kafka.produce` and `kafka.consume` against the session's embedded broker, and a local
Confluent Schema Registry (tests/schema_registry.py) for Avro with a registry."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
import struct
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiokafka
import orjson
import pytest
import trustme
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.admin import ApiVersionResponse_v0
from aiokafka.protocol.metadata import MetadataResponse_v0
from aiokafka.protocol.transaction import InitProducerIdResponse_v0
from fastavro import parse_schema

from headrace.broker import EmbeddedBroker, free_port
from headrace.connectors import kafka
from headrace.connectors.kafka_client import ProducerProperties
from headrace.connectors.kafka_values import AvroEncoder, UnwritableValue
from headrace.flow.loader import load_flow
from headrace.kafka_values import read_avro
from headrace.states import State
from headrace.storage import Storage
from headrace.testing import TaskRun, run_task
from tests.integration.stacks import new_topic
from tests.schema_registry import RegistryServer, redirecting_registry
from tests.stored_runs import files_under, run_stored, stored_lines
from tests.unit.test_flow_loader import errors_of

DEADLINE_S = 10.0
ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "com.shop",
    "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "placedAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "blob", "type": "bytes"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
# As a flow writes it, and as kafka.consume gives it back.
AN_ORDER = {
    "sku": "A1",
    "qty": 2,
    "placedAt": "2024-05-01T12:00:00.123000+00:00",
    "price": "12.50",
    "blob": "AP8=",
    "note": None,
}


@pytest.fixture
def bootstrap(broker: EmbeddedBroker) -> str:
    return broker.bootstrap


@pytest.fixture
async def topic(bootstrap: str) -> str:
    return await new_topic(bootstrap, "kafka-task")


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    server = RegistryServer().start()
    yield server
    server.stop()


async def produce(bootstrap: str, topic: str, records: Any, **properties: Any) -> TaskRun:
    return await run_task(
        "kafka.produce",
        {"properties": {"bootstrap.servers": bootstrap}, "topic": topic, "from": records}
        | properties,
    )


async def consume(bootstrap: str, topic: str, **properties: Any) -> TaskRun:
    return await run_task(
        "kafka.consume",
        {"properties": {"bootstrap.servers": bootstrap}, "topic": topic, "pollDuration": "PT5S"}
        | properties,
    )


def without_timestamps(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "timestamp"} for m in messages]


async def raw_values(bootstrap: str, topic: str, count: int) -> list[bytes]:
    """The first `count` values of partition 0 as bytes, read past the connector."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(DEADLINE_S):
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=100)
                values += [record.value for records in batch.values() for record in records]
        return values
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ round trips


async def test_json_records_keep_their_keys_headers_partitions_and_timestamps(
    bootstrap: str,
) -> None:
    topic = await new_topic(bootstrap, "kafka-task", partitions=2)
    records = [
        {
            "key": "o-1",
            "value": {"sku": "A1", "qty": 2},
            "partition": 0,
            "headers": {"source": "web"},
        },
        # Kestra's headers: a list of one-entry mappings, a name may come twice.
        {
            "key": 42,
            "value": [1, "two"],
            "partition": 1,
            "timestamp": "2024-05-01T12:00:00Z",
            "headers": [{"trace": "a"}, {"trace": "b"}],
        },
        {"key": "o-1", "value": None, "partition": 1, "timestamp": 1714564800000},
    ]
    run = await produce(bootstrap, topic, records, valueSerializer="JSON")
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"messagesCount": 3}
    assert run.messages[-1] == f"sent 3 record(s) to {topic}"

    read = await consume(bootstrap, topic, valueDeserializer="JSON", maxRecords=3)
    assert read.state is State.SUCCESS, read.error
    assert read.outputs["messagesCount"] == 3
    by_place = sorted(read.outputs["messages"], key=lambda m: (m["partition"], m["offset"]))
    assert [m["timestamp"] for m in by_place[1:]] == ["2024-05-01T12:00:00+00:00"] * 2
    first = by_place[0]
    assert (first["key"], first["value"], first["headers"]) == (
        "o-1",
        {"sku": "A1", "qty": 2},
        {"source": "web"},
    )
    assert without_timestamps(by_place[1:]) == [
        # STRING keys: a number is written as its JSON text.
        {
            "topic": topic,
            "partition": 1,
            "offset": 0,
            "key": "42",
            "value": [1, "two"],
            "headers": {"trace": "b"},
        },
        # No value: a tombstone.
        {"topic": topic, "partition": 1, "offset": 1, "key": "o-1", "value": None, "headers": {}},
    ]


async def test_string_values_under_kestras_type_names(bootstrap: str, topic: str) -> None:
    run = await run_task(
        "io.kestra.plugin.kafka.Produce",
        {
            "properties": {"bootstrap.servers": bootstrap},
            "topic": topic,
            "from": {"key": "k", "value": "héllo"},  # one record: a mapping
        },
    )
    assert run.state is State.SUCCESS, run.error
    read = await run_task(
        "io.kestra.plugin.kafka.Consume",
        {"properties": {"bootstrap.servers": bootstrap}, "topic": [topic], "maxRecords": 1},
    )
    assert read.state is State.SUCCESS, read.error
    assert [(m["key"], m["value"]) for m in read.outputs["messages"]] == [("k", "héllo")]


async def test_avro_without_a_registry_is_the_body_alone(bootstrap: str, topic: str) -> None:
    run = await produce(
        bootstrap,
        topic,
        [{"key": "o-1", "value": AN_ORDER}],
        valueSerializer="AVRO",
        valueAvroSchema=orjson.dumps(ORDER).decode(),  # Kestra's form: JSON text
    )
    assert run.state is State.SUCCESS, run.error
    [raw] = await raw_values(bootstrap, topic, 1)
    assert raw[:3] == b"\x04A1"  # no header: the Avro body starts with the string "A1"
    read = await consume(
        bootstrap,
        topic,
        valueDeserializer="AVRO",
        avroFormat="RAW",
        valueAvroSchema=ORDER,
        maxRecords=1,
    )
    assert read.state is State.SUCCESS, read.error
    [message] = read.outputs["messages"]
    assert message["value"] == AN_ORDER  # bytes, decimals and timestamps as they went in

    # What a consume read, a produce can send on (`from: "{{ outputs.read.messages }}"`);
    # a message's own topic and partition would win over the task's, as in Kestra.
    copy = await new_topic(bootstrap, "kafka-copy")
    messages = [m | {"topic": copy, "partition": 0} for m in read.outputs["messages"]]
    again = await produce(bootstrap, copy, messages, valueSerializer="AVRO", valueAvroSchema=ORDER)
    assert again.state is State.SUCCESS, again.error
    assert await raw_values(bootstrap, copy, 1) == [raw]


async def test_avro_with_a_registry_is_registered_and_framed_as_confluent_does(
    bootstrap: str, topic: str, registry: RegistryServer
) -> None:
    run = await produce(
        bootstrap,
        topic,
        [{"key": "o-1", "value": AN_ORDER}],
        keySerializer="AVRO",
        keyAvroSchema="string",
        valueSerializer="AVRO",
        valueAvroSchema=ORDER,
        schemaRegistryUrl=registry.url,
    )
    assert run.state is State.SUCCESS, run.error
    key_id, value_id = registry.subjects[f"{topic}-key"][0], registry.subjects[f"{topic}-value"][0]
    assert orjson.loads(registry.schemas[value_id][1]) == ORDER
    [raw] = await raw_values(bootstrap, topic, 1)
    assert raw[:5] == b"\x00" + value_id.to_bytes(4, "big")

    # The reader needs no schema: each message's id names it in the registry.
    read = await consume(
        bootstrap,
        topic,
        keyDeserializer="AVRO",
        valueDeserializer="AVRO",
        serdeProperties={"schema.registry.url": registry.url},
        maxRecords=1,
    )
    assert read.state is State.SUCCESS, read.error
    assert [(m["key"], m["value"]) for m in read.outputs["messages"]] == [("o-1", AN_ORDER)]
    assert set(registry.requests) == {key_id, value_id}
    registry.available = False  # its ids are known now: a fresh read asks again
    down = await consume(
        bootstrap, topic, valueDeserializer="AVRO", schemaRegistryUrl=registry.url, maxRecords=1
    )
    assert down.error == f"schema registry {registry.url} answered 500 for schema id {value_id}"
    registry.available = True

    # A new version the registry finds incompatible: refused with its reason, nothing sent.
    grown = ORDER | {"fields": [*ORDER["fields"], {"name": "shop", "type": "string"}]}
    refused = await produce(
        bootstrap,
        topic,
        {"value": AN_ORDER | {"shop": "eu"}},
        valueSerializer="AVRO",
        valueAvroSchema=grown,
        schemaRegistryUrl=registry.url,
    )
    assert refused.state is State.FAILED
    assert refused.error == (
        f"schema registry {registry.url} refused the schema of '{topic}-value' (409, error"
        f" 409): Schema being registered is incompatible with an earlier schema for subject"
        f' "{topic}-value"'
    )


SHAPES = {
    "type": "record",
    "name": "Shapes",
    "fields": [
        {
            "name": "shape",
            "type": [
                "null",
                {"type": "record", "name": "Circle", "fields": [{"name": "r", "type": "double"}]},
                {
                    "type": "record",
                    "name": "Square",
                    "fields": [{"name": "side", "type": "double"}],
                },
            ],
        },
        {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "ratio", "type": "float"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 2}},
    ],
}
A_SHAPE = {
    "shape": {"side": 2.5},
    "tags": {"x": [1, 2]},
    "kind": "B",
    "at": "2024-05-01T12:00:00.000001",
    "id": "6f1c2a9e-6a8f-4a57-9d8e-2f0c5b2f9a11",
    "ratio": "NaN",
    "digest": "AP8=",
}


def test_avro_values_are_written_from_json_data_and_read_back_the_same() -> None:
    # `shape` takes the union's branch whose fields it has (Square), not the first record.
    written = AvroEncoder(SHAPES, None, "value").encode(A_SHAPE, "t")
    assert read_avro(written, parse_schema(SHAPES)) == A_SHAPE


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"shape": {"radius": 1}},
            ".shape: is a mapping, which fits no branch of (null, Circle, Square)",
        ),
        ({"tags": {"x": [1, "2"]}}, ".tags.x[1]: is text, the schema wants long"),
        ({"kind": "C"}, ".kind: 'C' is not a symbol of Kind (A, B)"),
        ({"id": "nope"}, ".id: is not a uuid: badly formed hexadecimal UUID string"),
        ({"digest": "AAAA"}, ".digest: is 3 bytes, fixed Digest holds 2"),
        ({"ratio": True}, ".ratio: is a boolean, the schema wants float"),
        (
            {"extra": 1},
            ".extra: is not a field of Shapes (shape, tags, kind, at, id, ratio, digest)",
        ),
    ],
)
def test_avro_values_that_do_not_fit_say_where(change: dict[str, Any], error: str) -> None:
    with pytest.raises(UnwritableValue) as caught:
        AvroEncoder(SHAPES, None, "value").encode(A_SHAPE | change, "t")
    assert str(caught.value) == error


# ------------------------------------------------------------------ how a read ends


async def test_a_read_ends_at_max_records_max_duration_or_a_quiet_poll_duration(
    bootstrap: str, topic: str
) -> None:
    run = await produce(bootstrap, topic, [{"value": f"m{i}"} for i in range(5)])
    assert run.state is State.SUCCESS, run.error

    started = time.monotonic()
    two = await consume(bootstrap, topic, maxRecords=2, pollDuration="PT30S")
    assert [m["value"] for m in two.outputs["messages"]] == ["m0", "m1"]
    assert time.monotonic() - started < 5  # no waiting for more once it has 2

    started = time.monotonic()
    quiet = await consume(bootstrap, topic, pollDuration="PT0.5S")
    assert [m["value"] for m in quiet.outputs["messages"]] == [f"m{i}" for i in range(5)]
    assert 0.5 <= time.monotonic() - started < 5  # stopped by half a second of nothing

    started = time.monotonic()
    bounded = await consume(bootstrap, topic, maxDuration="PT0.5S", pollDuration="PT30S")
    assert bounded.outputs["messagesCount"] == 5
    assert 0.5 <= time.monotonic() - started < 5


async def test_since_skips_older_messages(bootstrap: str, topic: str) -> None:
    records = [
        {"value": "old", "timestamp": "2020-01-01T00:00:00Z"},
        {"value": "new", "timestamp": "2024-01-01T00:00:00Z"},
    ]
    assert (await produce(bootstrap, topic, records)).state is State.SUCCESS
    read = await consume(bootstrap, topic, since="2023-06-01T00:00:00+00:00", pollDuration="PT0.5S")
    assert [m["value"] for m in read.outputs["messages"]] == ["new"]


async def test_a_group_starts_where_it_committed(bootstrap: str, topic: str) -> None:
    await produce(bootstrap, topic, [{"value": v} for v in ("a", "b", "c")])
    first = await consume(bootstrap, topic, groupId=f"g-{topic}", maxRecords=2)
    assert [m["value"] for m in first.outputs["messages"]] == ["a", "b"]
    assert first.messages == [f"read 2 message(s) from {topic}, committed for group g-{topic}"]
    # "c" was fetched with the others but not returned: the commit was after "b".
    rest = await consume(bootstrap, topic, groupId=f"g-{topic}", maxRecords=1)
    assert [m["value"] for m in rest.outputs["messages"]] == ["c"]
    await produce(bootstrap, topic, [{"value": "d"}])
    later = await consume(
        bootstrap,
        topic,
        properties={"bootstrap.servers": bootstrap, "group.id": f"g-{topic}"},
        maxRecords=1,
    )
    assert [m["value"] for m in later.outputs["messages"]] == ["d"]

    # A new group that starts at the end reads nothing, and later only what came since.
    latest = {"bootstrap.servers": bootstrap, "auto.offset.reset": "latest"}
    nothing = await consume(
        bootstrap, topic, groupId=f"l-{topic}", properties=latest, pollDuration="PT0.5S"
    )
    assert nothing.outputs == {"messagesCount": 0, "messages": []}
    await produce(bootstrap, topic, [{"value": "e"}])
    news = await consume(bootstrap, topic, groupId=f"l-{topic}", properties=latest, maxRecords=1)
    assert [m["value"] for m in news.outputs["messages"]] == ["e"]

    # Without a group: everything, every time.
    everything = await consume(bootstrap, topic, maxRecords=5)
    assert [m["value"] for m in everything.outputs["messages"]] == ["a", "b", "c", "d", "e"]


# ------------------------------------------------------------------ failures


async def test_records_the_serializer_cannot_write_fail_before_anything_is_sent(
    bootstrap: str, topic: str
) -> None:
    mapping = await produce(bootstrap, topic, [{"value": "fine"}, {"value": {"a": 1}}])
    assert mapping.state is State.FAILED
    assert mapping.error == (
        "from[1].value is a mapping, and STRING writes text: use JSON for objects and lists"
        " (valueSerializer STRING)"
    )
    field = await produce(
        bootstrap,
        topic,
        {"value": AN_ORDER | {"qty": "two"}},
        valueSerializer="AVRO",
        valueAvroSchema=ORDER,
    )
    assert field.error == "from.value.qty is text, the schema wants int (valueSerializer AVRO)"
    partition = await produce(bootstrap, topic, [{"value": "x", "partition": 3}])
    assert partition.error == f"from[0].partition: topic '{topic}' has partitions 0 to 0, not 3"
    # None of them was sent: a record sent now is the topic's first.
    await produce(bootstrap, topic, {"value": "marker"})
    first = await consume(bootstrap, topic, maxRecords=1)
    assert [(m["offset"], m["value"]) for m in first.outputs["messages"]] == [(0, "marker")]

    # Refused by the client, past its max.request.size: the records before it are written.
    too_large = await produce(bootstrap, topic, [{"value": "ok"}, {"value": "x" * 1_100_000}])
    assert (too_large.error or "").startswith(
        "from[1] was not written: [Error 10] MessageSizeTooLargeError: The message is"
    )
    assert (too_large.error or "").endswith("(1 of 2 records were)")


async def test_an_undecodable_message_fails_the_read_and_commits_nothing(
    bootstrap: str, topic: str
) -> None:
    await produce(bootstrap, topic, [{"value": '{"ok": 1}'}, {"value": "not json"}])
    group = f"g-{topic}"
    failed = await consume(bootstrap, topic, groupId=group, valueDeserializer="JSON", maxRecords=2)
    assert failed.state is State.FAILED
    assert (failed.error or "").startswith(f"message {topic}[0]@1: the value is not JSON: ")
    assert (failed.error or "").endswith("(valueDeserializer JSON); nothing was committed")
    # Read as text, the group gets past it: the failed read committed nothing.
    text = await consume(bootstrap, topic, groupId=group, maxRecords=2)
    assert [m["value"] for m in text.outputs["messages"]] == ['{"ok": 1}', "not json"]


async def test_messages_over_the_outputs_limit_fail_clearly(bootstrap: str, topic: str) -> None:
    big = "x" * 100_000
    await produce(bootstrap, topic, [{"value": big} for _ in range(3)])
    group = f"g-{topic}"
    over = await consume(bootstrap, topic, groupId=group, maxRecords=3)
    assert over.state is State.FAILED
    assert (over.error or "").startswith(
        "the messages read are over the 256 KiB an attempt's outputs may hold (293."
    )
    assert (over.error or "").endswith(
        " KiB at message 3): set maxRecords to read fewer at a time, or store them in a file"
        " (store: true); nothing was committed"
    )
    fits = await consume(bootstrap, topic, groupId=group, maxRecords=2)
    assert fits.state is State.SUCCESS and fits.outputs["messagesCount"] == 2


# ------------------------------------------------------------------ store


async def consume_stored(
    bootstrap: str, topic: str, storage: Storage, **properties: Any
) -> TaskRun:
    return await run_stored(
        "kafka.consume",
        {
            "properties": {"bootstrap.servers": bootstrap},
            "topic": topic,
            "pollDuration": "PT0.5S",
            "store": True,
        }
        | properties,
        storage,
        task_id="read",
    )


STORED_URI = (
    "headrace:///test/test-flow/executions/test-execution/tasks/read/test-task-run/read.jsonl"
)


async def test_stored_messages_go_to_a_file_beyond_the_outputs_limit(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    small = [{"key": f"k{i}", "value": {"n": i}, "headers": {"h": "v"}} for i in range(3)]
    await produce(bootstrap, topic, small, valueSerializer="JSON")
    inline = await consume(bootstrap, topic, valueDeserializer="JSON", maxRecords=3)
    stored = await consume_stored(bootstrap, topic, storage, valueDeserializer="JSON")
    assert stored.state is State.SUCCESS, stored.error
    assert stored.outputs == {"messagesCount": 3, "uri": STORED_URI}
    assert stored.messages == [f"read 3 message(s) from {topic} into {STORED_URI}"]
    # Each line is the message the inline form gives.
    assert stored_lines(storage, STORED_URI) == inline.outputs["messages"]

    # Far over the 256 KiB of outputs, with a group: committed once the file is whole.
    big = [{"value": "x" * 100_000} for _ in range(5)]
    await produce(bootstrap, topic, big)
    group = f"g-{topic}"
    whole = await consume_stored(bootstrap, topic, storage, groupId=group, maxRecords=7)
    assert whole.state is State.SUCCESS, whole.error
    assert whole.outputs == {"messagesCount": 7, "uri": STORED_URI}
    assert whole.messages == [
        f"read 7 message(s) from {topic} into {STORED_URI}, committed for group {group}"
    ]
    lines = stored_lines(storage, STORED_URI)
    assert [m["offset"] for m in lines] == list(range(7))
    assert [len(m["value"]) for m in lines[3:]] == [100_000] * 4
    rest = await consume_stored(bootstrap, topic, storage, groupId=group)
    assert rest.outputs == {"messagesCount": 1, "uri": STORED_URI}
    assert [m["offset"] for m in stored_lines(storage, STORED_URI)] == [7]


async def test_a_failed_stored_read_leaves_no_file_and_commits_nothing(
    bootstrap: str, topic: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    await produce(bootstrap, topic, [{"value": '{"ok": 1}'}, {"value": "not json"}])
    group = f"g-{topic}"
    failed = await consume_stored(
        bootstrap, topic, storage, groupId=group, valueDeserializer="JSON"
    )
    assert failed.state is State.FAILED
    assert (failed.error or "").startswith(f"message {topic}[0]@1: the value is not JSON: ")
    assert files_under(tmp_path) == []
    text = await consume_stored(bootstrap, topic, storage, groupId=group)
    assert [m["value"] for m in stored_lines(storage, STORED_URI)] == ['{"ok": 1}', "not json"]
    assert text.outputs["messagesCount"] == 2

    nowhere = await consume_stored(bootstrap, topic, None)
    assert nowhere.state is State.FAILED
    assert nowhere.error == (
        "store: true writes its result to a file, and no file storage is set up where this"
        " task runs (workers have one: HEADRACE_STORAGE_DIR)"
    )


async def test_an_unreachable_broker_fails_clearly() -> None:
    port = free_port()  # nothing listens there
    run = await produce(f"127.0.0.1:{port}", "t", {"value": "x"})
    assert run.state is State.FAILED
    assert (run.error or "").startswith(
        f"could not connect to Kafka at 127.0.0.1:{port} (properties.bootstrap.servers):"
        f" 127.0.0.1:{port}: "
    )
    read = await consume(f"127.0.0.1:{port}", "t")
    assert (read.error or "").startswith(f"could not connect to Kafka at 127.0.0.1:{port}")


class SilentServer:
    """Accepts connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        await reader.read()  # until the client closes its end
        self.closed += 1
        writer.close()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[SilentServer, str]]:
    fake = SilentServer()
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake, f"127.0.0.1:{port}"


async def wait_until(condition: Any) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_kill_or_a_timeout_closes_the_connection(silent: tuple[SilentServer, str]) -> None:
    fake, address = silent
    running = asyncio.ensure_future(produce(address, "t", {"value": "x"}))
    await wait_until(lambda: fake.opened == 1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await wait_until(lambda: fake.closed == 1)  # not left open by the killed task

    started = time.monotonic()
    timed = await run_task(
        "kafka.consume",
        {"properties": {"bootstrap.servers": address}, "topic": "t"},
        timeout=timedelta(seconds=0.5),
    )
    assert timed.state is State.FAILED and (timed.error or "").startswith("timed out after PT0.5S")
    assert time.monotonic() - started < 3
    await wait_until(lambda: fake.closed == 2)


async def test_the_workers_deny_list_covers_brokers(
    bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "127.0.0.0/8")
    run = await produce(bootstrap, "t", {"value": "x"})
    assert run.error == "127.0.0.1 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    named = await consume(bootstrap.replace("127.0.0.1", "localhost"), "t")
    assert (named.error or "").startswith("localhost (")
    assert (named.error or "").endswith(
        "is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    )


API_VERSIONS, METADATA, INIT_PRODUCER_ID = 18, 3, 22


class FakeBroker:
    """Just enough of a Kafka broker for a client to start, look up a topic and ask for a
    producer id, as the protocol guide describes these requests ("A Guide To The Kafka
    Protocol", "Kafka protocol": size-prefixed frames; ApiVersions, Metadata and
    InitProducerId, version 0): a broker a flow controls. Its first Metadata answer
    names itself, node 1, as the only broker, and no topic; later ones name topic `t`,
    led by node 1 or, with `moved_to`, by a node 2 at that address (the leader moved).
    With `producer_id_error`, it has InitProducerId and answers it with that error code.
    Other requests (Produce, ListOffsets…) are not answered."""

    def __init__(
        self, moved_to: tuple[str, int] | None = None, producer_id_error: int | None = None
    ) -> None:
        self.moved_to = moved_to
        self.producer_id_error = producer_id_error
        self.address = ("127.0.0.1", 0)
        self.metadata_answers = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                size = int.from_bytes(await reader.readexactly(4), "big")
                request = await reader.readexactly(size)
                api_key, _version, correlation_id = struct.unpack(">hhi", request[:8])
                body = self._answer(api_key)
                if body is None:
                    continue  # not answered: the client waits until its request times out
                frame = struct.pack(">i", correlation_id) + body
                writer.write(struct.pack(">i", len(frame)) + frame)
                await writer.drain()
        writer.close()

    def _answer(self, api_key: int) -> bytes | None:
        if api_key == API_VERSIONS:
            versions = [(API_VERSIONS, 0, 0), (METADATA, 0, 0)]
            if self.producer_id_error is not None:
                versions.append((INIT_PRODUCER_ID, 0, 0))
            return ApiVersionResponse_v0(error_code=0, api_versions=versions).encode()
        if api_key == INIT_PRODUCER_ID and self.producer_id_error is not None:
            return InitProducerIdResponse_v0(
                throttle_time_ms=0,
                error_code=self.producer_id_error,
                producer_id=-1,
                producer_epoch=-1,
            ).encode()
        if api_key != METADATA:
            return None
        self.metadata_answers += 1
        brokers = [(1, *self.address)]
        if self.metadata_answers == 1:
            return MetadataResponse_v0(brokers=brokers, topics=[]).encode()
        leader = 1
        if self.moved_to is not None:
            brokers.append((2, *self.moved_to))
            leader = 2
        topic = (0, "t", [(0, 0, leader, [leader], [leader])])  # no error, partition 0
        return MetadataResponse_v0(brokers=brokers, topics=[topic]).encode()


@contextlib.asynccontextmanager
async def fake_broker(fake: FakeBroker) -> AsyncIterator[str]:
    """`fake`, listening: its bootstrap address."""
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.address = ("127.0.0.1", server.sockets[0].getsockname()[1])
    async with server:
        yield f"127.0.0.1:{fake.address[1]}"


@contextlib.asynccontextmanager
async def moving_cluster() -> AsyncIterator[tuple[str, list[int]]]:
    """A `FakeBroker`'s bootstrap address, and the connections accepted at the address
    it moves topic `t` to (127.0.0.2: a loopback address other than the broker's)."""
    accepted: list[int] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    denied = await asyncio.start_server(accept, "127.0.0.2", 0)
    fake = FakeBroker(moved_to=("127.0.0.2", denied.sockets[0].getsockname()[1]))
    async with denied, fake_broker(fake) as address:
        yield address, accepted


async def test_brokers_named_later_are_checked_before_each_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unguarded, the client follows the metadata to the other address: what the guard
    # must stop.
    async with moving_cluster() as (address, accepted):
        running = asyncio.ensure_future(consume(address, "t"))
        await wait_until(lambda: accepted)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    monkeypatch.setenv("HEADRACE_HTTP_DENY", "127.0.0.2/32")
    denied = "127.0.0.2 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    async with moving_cluster() as (address, accepted):
        started = time.monotonic()
        read = await consume(address, "t")
        idempotence = {"bootstrap.servers": address, "enable.idempotence": False}
        sent = await produce(address, "t", {"value": "x"}, properties=idempotence)
        assert (read.error, sent.error) == (denied, denied)
        assert time.monotonic() - started < 5  # at once, not after a timeout
    assert accepted == []  # never connected there


@pytest.mark.parametrize(
    ("error", "remembered"),
    [
        (-1, True),  # UnknownError: the embedded broker's answer, whoever asks
        (31, False),  # ClusterAuthorizationFailed: these credentials', not the cluster's
    ],
)
async def test_only_a_clusters_refusal_of_idempotence_is_remembered(
    error: int, remembered: bool
) -> None:
    async with fake_broker(FakeBroker(producer_id_error=error)) as address:
        # It answers no Produce request: the send times out, the refusal was before.
        quick = {"bootstrap.servers": address, "request.timeout.ms": 200}
        run = await produce(address, "t", {"value": "x"}, properties=quick)
    assert run.state is State.FAILED
    assert run.messages[0].startswith(f"{kafka.NOT_IDEMPOTENT} ([Error {error}] ")
    assert (address in kafka._NOT_IDEMPOTENT) is remembered


async def test_a_registry_redirect_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    # aiohttp skips the resolver, and so the deny-list's check of each address, for an
    # address written in a URL: a followed redirect to one would have reached it.
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"id": 1})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "127.0.0.2/32")
    async with (
        TestServer(app, host="127.0.0.2") as denied,
        redirecting_registry(to=str(denied.make_url(""))) as url,
    ):
        run = await produce(
            "127.0.0.1:9",  # not reached: records are encoded first
            "orders",
            {"value": "x"},
            valueSerializer="AVRO",
            valueAvroSchema="string",
            schemaRegistryUrl=url,
        )
    assert run.error == (
        f"schema registry {url} answered 307 for 'orders-value', a redirect, which is not"
        " followed: give the registry's own URL"
    )
    assert asked == []


def test_aiokafka_opens_connections_only_where_the_guard_checks() -> None:
    # BrokerGuard checks `AIOKafkaClient.bootstrap` and `._get_conn`: an aiokafka that
    # opens connections anywhere else must fail here, not slip past the deny-list.
    root = Path(aiokafka.__file__).parent
    openers = ("create_conn(", "AIOKafkaConnection(", "create_connection(", "open_connection(")
    found = {
        (path.relative_to(root).as_posix(), opener, line.split(opener)[0].strip())
        for path in root.rglob("*.py")
        for line in path.read_text().splitlines()
        for opener in openers
        if opener in line
    }
    assert found == {
        ("client.py", "create_conn(", "bootstrap_conn = await"),
        ("client.py", "create_conn(", "self._conns[conn_id] = await"),
        ("conn.py", "create_conn(", "async def"),
        ("conn.py", "AIOKafkaConnection(", "conn ="),
        ("conn.py", "create_connection(", "transport, _ = await loop."),
    }
    assert "bootstrap_conn = await create_conn(" in inspect.getsource(AIOKafkaClient.bootstrap)
    assert "= await create_conn(" in inspect.getsource(AIOKafkaClient._get_conn)


async def test_tls_and_sasl_properties_become_the_clients_settings() -> None:
    ca = trustme.CA()
    server_cert, client_cert = ca.issue_cert("localhost"), ca.issue_cert("headrace-worker")
    properties = ProducerProperties.model_validate(
        {
            "bootstrap.servers": "localhost:9093",
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule"
            ' required username="ada" password="p\\"w";',
            "ssl.truststore.certificates": ca.cert_pem.bytes().decode(),
            "ssl.keystore.certificate.chain": client_cert.cert_chain_pems[0].bytes().decode(),
            "ssl.keystore.key": client_cert.private_key_pem.bytes().decode(),
        }
    )
    settings = properties.producer_settings(idempotent=True)
    assert (settings["sasl_mechanism"], settings["sasl_plain_username"]) == ("SCRAM-SHA-512", "ada")
    assert settings["sasl_plain_password"] == 'p"w'
    # The context trusts the CA and presents the client's certificate: mutual TLS works.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    peers: list[Any] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    async with server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=settings["ssl_context"], server_hostname="localhost"
        )
        await wait_until(lambda: peers)
        writer.close()
    assert peers[0]["subjectAltName"] == (("DNS", "headrace-worker"),)


# ------------------------------------------------------------------ validation


PRODUCE = "    type: kafka.produce\n    topic: t\n    from: {value: x}\n"
CONSUME = "    type: kafka.consume\n    topic: t\n    properties: {bootstrap.servers: 'k:9092'}\n"
KAFKA = "    properties: {bootstrap.servers: 'k:9092'}\n"


@pytest.mark.parametrize(
    ("task", "line", "path", "message"),
    [
        (
            PRODUCE + "    properties:\n      bootstrap.servers: k:9092\n      acks: '1'\n",
            9,
            "tasks[0].properties",
            "Kafka property acks is always `all`: a record counts as written once every"
            " in-sync replica has it",
        ),
        (
            PRODUCE + "    properties: {bootstrap.servers: 'k:9092', group.id: g}\n",
            8,
            "tasks[0].properties",
            "Kafka property group.id is a consumer setting, which kafka.produce does not read",
        ),
        (
            PRODUCE + "    properties: {bootstrap.servers: 'k:9092', ssl.keystore.location: /k}\n",
            8,
            "tasks[0].properties",
            "Kafka property ssl.keystore.location is a JKS or PKCS12 store, which is not read:",
        ),
        (
            PRODUCE + "    properties: {bootstrap.servers: kafka}\n",
            8,
            "tasks[0].properties['bootstrap.servers']",
            "'kafka' is not host:port, as kafka-1:9092",
        ),
        (
            PRODUCE + "    properties: {bootstrap.servers: 'k:9092', security.protocol: TLS}\n",
            8,
            "tasks[0].properties['security.protocol']",
            "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'",
        ),
        (
            PRODUCE + KAFKA + "    valueSerializer: INTEGER\n",
            9,
            "tasks[0].valueSerializer",
            "INTEGER is one of Kestra's serdes that headrace does not have",
        ),
        (
            PRODUCE + KAFKA + "    valueSerializer: AVRO\n",
            4,
            "tasks[0]",
            "valueSerializer AVRO needs valueAvroSchema",
        ),
        (
            "    type: kafka.produce\n    from: [{value: x, offst: 1}]\n" + KAFKA,
            6,
            "tasks[0].from[0].offst",
            "unknown property 'offst'",
        ),
        (
            PRODUCE + "    properties: {bootstrap.servers: 'k:9092', sasl.username: u}\n",
            8,
            "tasks[0].properties",
            "sasl.* is only read with security.protocol SASL_SSL or SASL_PLAINTEXT",
        ),
        (CONSUME + "    pollDuration: 5\n", 8, "tasks[0].pollDuration", "PT10S"),
        (
            CONSUME + "    valueDeserializer: AVRO\n    valueAvroSchema: {type: fixed, name: F}\n",
            9,
            "tasks[0].valueAvroSchema",
            "invalid Avro schema, got no key 'size'",
        ),
        (
            CONSUME + "    valueDeserializer: AVRO\n    avroFormat: RAW\n"
            "    schemaRegistryUrl: http://registry:8081\n",
            4,
            "tasks[0]",
            "a RAW value carries no schema id",
        ),
    ],
)
def test_bad_properties_are_refused_when_the_flow_is_loaded(
    task: str, line: int, path: str, message: str
) -> None:
    [error] = errors_of(f"id: f\nnamespace: n\ntasks:\n  - id: k\n{task}")
    assert (error.line, error.path) == (line, path)
    assert message in error.message


SECRET = "hunter2-not-for-logs"
SASL = "      bootstrap.servers: k:9092\n      security.protocol: SASL_PLAINTEXT\n"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            f'sasl.jaas.config: \'username="ada" password="{SECRET}";\'',
            "sasl.jaas.config must read org.apache.kafka.common.security.plain.PlainLoginModule"
            ' (or scram.ScramLoginModule) required username="…" password="…", got other text'
            " (not shown: it holds a password)",
        ),
        (
            "sasl.jaas.config: 'org.apache.kafka.common.security.plain.PlainLoginModule"
            f' required password="{SECRET}";\'',
            'sasl.jaas.config names no username="…", got text without one (not shown: it'
            " holds a password)",
        ),
        ("sasl.password: 20240501", "must be text, got a number (not shown: it holds a password)"),
    ],
)
async def test_errors_never_show_a_sasl_password(setting: str, message: str) -> None:
    if "password:" in setting:
        setting = "sasl.username: ada\n      " + setting
    [error] = errors_of(
        f"id: f\nnamespace: n\ntasks:\n  - id: k\n{PRODUCE}    properties:\n{SASL}      {setting}\n"
    )
    assert message in error.message
    run = await run_task(
        "kafka.produce",
        {
            "properties": yaml.safe_load(SASL + "      " + setting),
            "topic": "t",
            "from": {"value": "x"},
        },
    )
    assert run.state is State.FAILED
    assert message in (run.error or "")
    for shown in (error.message, error.hint or "", run.error or ""):
        assert SECRET not in shown and "20240501" not in shown


def test_expressions_wait_for_their_values() -> None:
    flow = load_flow(
        "id: f\nnamespace: n\ntasks:\n  - id: k\n"
        + CONSUME.replace("'k:9092'", "'{{ vars.k }}'")
        + "    maxRecords: '{{ inputs.n }}'\n    groupId: '{{ flow.id }}'\n"
    )
    assert flow.tasks[0].type == "kafka.consume"
