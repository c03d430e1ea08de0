"""AVRO values of Kafka triggers without a broker: the flow's settings, decoding, registry."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import ConsumerRecord
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.broker import free_port
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.triggers import KafkaTrigger
from headrace.kafka_values import (
    AvroDecoder,
    RegistryUnavailable,
    SchemaRegistry,
    UndecodableValue,
    confluent_frame,
    value_decoder,
)
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.kafka_triggers import (
    Batcher,
    batch_start,
    message_starts,
    read_message,
)
from tests.schema_registry import RegistryServer, redirecting_registry

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "com.shop",
    "fields": [
        {"name": "sku", "type": "string"},
        {"name": "qty", "type": "int"},
        {"name": "placedAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "blob", "type": "bytes"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "map", "values": "double"}},
    ],
}
AN_ORDER = {
    "sku": "A1",
    "qty": 2,
    "placedAt": datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
    "day": date(2024, 5, 1),
    "price": Decimal("12.50"),
    "blob": b"\x00\xff",
    "note": None,
    "tags": {"weight": 1.5, "odd": float("nan")},
}
# What the flow sees: JSON data only.
AN_ORDER_JSON = {
    "sku": "A1",
    "qty": 2,
    "placedAt": "2024-05-01T12:00:00.123000+00:00",
    "day": "2024-05-01",
    "price": "12.50",
    "blob": "AP8=",
    "note": None,
    "tags": {"weight": 1.5, "odd": "NaN"},
}


def avro(value: Any, schema: Any = ORDER) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), value)
    return buffer.getvalue()


def confluent(schema_id: int, body: bytes) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + body


def flow(properties: str) -> str:
    return f"""
id: consume
namespace: shop
tasks:
  - id: hello
    type: log
    message: "{{{{ trigger.value.sku }}}}"
triggers:
  - id: orders
    type: kafka
    topic: orders
    valueDeserializer: AVRO
{properties}"""


INLINE = flow("    avroSchema: " + orjson.dumps(ORDER).decode() + "\n")


def declared(source: str) -> DeclaredTrigger:
    loaded = load_flow(source, "test")
    return DeclaredTrigger(loaded, 1, loaded.triggers[0])


def spec_of(source: str) -> KafkaTrigger:
    spec = declared(source).trigger.spec()
    assert isinstance(spec, KafkaTrigger)
    return spec


def record(offset: int, value: bytes | None) -> ConsumerRecord:
    return ConsumerRecord("orders", 0, offset, 1714564800000, 0, b"k", value, None, 1, 1, [])


# ------------------------------------------------------------------ the flow's settings


def test_the_schema_may_be_yaml_json_text_or_a_type_name() -> None:
    as_yaml = flow(
        "    avroSchema:\n      type: record\n      name: Order\n      namespace: com.shop\n"
        "      fields:\n        - {name: sku, type: string}\n"
    )
    as_text = flow(
        "    avroSchema: '"
        + orjson.dumps(
            {
                "type": "record",
                "name": "Order",
                "namespace": "com.shop",
                "fields": [{"name": "sku", "type": "string"}],
            }
        ).decode()
        + "'\n"
    )
    assert spec_of(as_yaml).avro_schema == spec_of(as_text).avro_schema
    assert spec_of(flow("    avroSchema: string\n")).avro_schema == "string"
    assert spec_of(INLINE).avro_format == "CONFLUENT"  # the default


@pytest.mark.parametrize(
    ("properties", "path", "line", "message"),
    [
        (
            "    avroSchema: {type: record, name: O, fields: [{name: a, type: strin}]}\n",
            "triggers[0].avroSchema",
            13,
            "unknown type 'strin'",
        ),
        ("    avroSchema: {type: fixed, name: F}\n", "triggers[0].avroSchema", 13, "'size'"),
        ("    avroSchema: '{\"type\": '\n", "triggers[0].avroSchema", 13, "not JSON"),
        ("    avroSchema: 5\n", "triggers[0].avroSchema", 13, "must be a mapping"),
        ("", "triggers[0]", 9, "needs the writer schema"),
        (
            "    schemaRegistryUrl: registry:8081\n",
            "triggers[0].schemaRegistryUrl",
            13,
            "http(s) URL",
        ),
        (
            "    schemaRegistryUrl: http://r:8081\n    avroFormat: RAW\n",
            "triggers[0].avroFormat",
            14,
            "carries no schema id",
        ),
        ("    avroSchema: string\n    avroFormat: raw\n", "triggers[0].avroFormat", 14, "RAW"),
    ],
)
def test_bad_avro_settings_are_load_errors_at_their_line(
    properties: str, path: str, line: int, message: str
) -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(flow(properties), "flows/consume.yaml")
    [error] = caught.value.errors
    assert (error.path, error.line) == (path, line)
    assert message in error.message


def test_avro_settings_without_avro_are_refused() -> None:
    source = flow("    avroSchema: string\n").replace(
        "valueDeserializer: AVRO", "valueDeserializer: JSON"
    )
    with pytest.raises(FlowValidationError, match="only read with valueDeserializer AVRO"):
        load_flow(source, "test")


# ------------------------------------------------------------------ decoding


def test_an_inline_schema_decodes_confluent_values_into_json_data() -> None:
    trigger = declared(INLINE)
    # Without a registry the header's schema id is not looked up: any id will do.
    values = [confluent(7, avro(AN_ORDER)), confluent(8, avro({**AN_ORDER, "sku": "B2"}))]
    starts = message_starts(trigger, [record(1, values[0]), record(2, values[1])], NOW)
    assert starts[0].trigger["value"] == AN_ORDER_JSON
    assert [s.trigger["value"]["sku"] for s in starts] == ["A1", "B2"]
    assert base64.b64decode(starts[0].trigger["value"]["blob"]) == b"\x00\xff"
    # Stored and rendered as JSON: nothing fastavro-specific is left in it.
    assert orjson.loads(orjson.dumps(starts[0].trigger["value"])) == AN_ORDER_JSON


def test_raw_values_are_read_without_a_header() -> None:
    raw = flow("    avroFormat: RAW\n    avroSchema: " + orjson.dumps(ORDER).decode() + "\n")
    [start] = message_starts(declared(raw), [record(1, avro(AN_ORDER))], NOW)
    assert start.trigger["value"] == AN_ORDER_JSON


def test_the_wrong_framing_is_undecodable_not_misread() -> None:
    confluent_decoder = value_decoder(spec_of(INLINE))
    with pytest.raises(UndecodableValue, match="avroFormat: RAW"):
        confluent_decoder.decode(avro(AN_ORDER))  # "A1" starts with its length, 0x04
    raw = flow("    avroFormat: RAW\n    avroSchema: " + orjson.dumps(ORDER).decode() + "\n")
    with pytest.raises(UndecodableValue):
        value_decoder(spec_of(raw)).decode(confluent(1, avro(AN_ORDER)))


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x00\x00",  # a header cut short
        confluent(1, avro(AN_ORDER)[:-3]),  # a body cut short
        confluent(1, avro(AN_ORDER) + b"\x00"),  # a byte too many
        confluent(1, b"\x02\xff\xfe"),  # invalid UTF-8 in sku
        b'{"sku": "A1"}',
    ],
)
def test_bad_bytes_are_undecodable(value: bytes) -> None:
    with pytest.raises(UndecodableValue):
        value_decoder(spec_of(INLINE)).decode(value)


def test_an_undecodable_message_is_skipped_and_the_others_start() -> None:
    records = [record(1, b"junk"), record(2, confluent(1, avro(AN_ORDER))), record(3, None)]
    starts = message_starts(declared(INLINE), records, NOW)
    assert [(s.trigger["offset"], s.trigger["value"]) for s in starts] == [
        (2, AN_ORDER_JSON),
        (3, None),  # a tombstone
    ]
    batch = flow(
        "    batch: {maxRecords: 3}\n    avroSchema: " + orjson.dumps(ORDER).decode() + "\n"
    )
    trigger = declared(batch)
    spec = spec_of(batch)
    assert spec.batch is not None
    decoder = value_decoder(spec)
    [complete] = Batcher(spec.batch).add([read_message(r, decoder) for r in records], now=0.0)
    start = batch_start(trigger, complete, NOW)
    assert start is not None and start.trigger["count"] == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.booleans())
def test_any_bytes_decode_or_are_undecodable_never_crash(value: bytes, framed: bool) -> None:
    decoder = value_decoder(spec_of(INLINE))
    try:
        decoded = decoder.decode(confluent(1, value) if framed else value)
    except UndecodableValue:
        return
    json.dumps(decoded, allow_nan=False)  # what decodes is strict JSON data


@given(
    st.text(),
    st.integers(-(2**31), 2**31 - 1),
    st.binary(),
    st.none() | st.text(),
)
def test_encoded_orders_decode_to_what_was_sent(
    sku: str, qty: int, blob: bytes, note: str | None
) -> None:
    sent = {**AN_ORDER, "sku": sku, "qty": qty, "blob": blob, "note": note}
    value = value_decoder(spec_of(INLINE)).decode(confluent(1, avro(sent)))
    assert (value["sku"], value["qty"], value["note"]) == (sku, qty, note)
    assert base64.b64decode(value["blob"]) == blob


def test_the_confluent_header_is_magic_byte_then_a_big_endian_id() -> None:
    assert confluent_frame(b"\x00\x00\x01\x00\x02body") == (65538, b"body")
    with pytest.raises(UndecodableValue):
        confluent_frame(b"\x01\x00\x00\x00\x01body")


# ------------------------------------------------------------------ the schema registry

ORDER_V2 = {**ORDER, "fields": [*ORDER["fields"], {"name": "channel", "type": "string"}]}


@pytest.fixture
def registry_server() -> Iterator[RegistryServer]:
    server = RegistryServer().start()
    try:
        yield server
    finally:
        server.stop()


def registry_flow(url: str, inline: Any = None) -> KafkaTrigger:
    extra = f"    schemaRegistryUrl: {url}\n"
    if inline is not None:
        extra += "    avroSchema: " + orjson.dumps(inline).decode() + "\n"
    return spec_of(flow(extra))


async def test_the_registry_gives_writer_schemas_by_id_fetched_once(
    registry_server: RegistryServer,
) -> None:
    registry_server.register(42, ORDER_V2)
    value = confluent(42, avro({**AN_ORDER, "channel": "web"}, ORDER_V2))
    async with SchemaRegistry(registry_server.url) as registry:
        decoder = value_decoder(registry_flow(registry_server.url), registry)
        await decoder.prepare([value, None, b"junk"])
        assert decoder.decode(value) == {**AN_ORDER_JSON, "channel": "web"}
        await decoder.prepare([value, value])
        assert decoder.decode(value)["channel"] == "web"
    assert registry_server.requests == [42]


async def test_with_an_inline_schema_too_values_are_resolved_to_it(
    registry_server: RegistryServer,
) -> None:
    registry_server.register(43, ORDER_V2)
    value = confluent(43, avro({**AN_ORDER, "channel": "web"}, ORDER_V2))
    async with SchemaRegistry(registry_server.url) as registry:
        # The flow reads v1: the field v2 added is dropped (Avro schema resolution).
        decoder = value_decoder(registry_flow(registry_server.url, ORDER), registry)
        await decoder.prepare([value])
        assert decoder.decode(value) == AN_ORDER_JSON


async def test_an_id_the_registry_does_not_know_is_undecodable_and_asked_again(
    registry_server: RegistryServer,
) -> None:
    value = confluent(99, avro(AN_ORDER))
    async with SchemaRegistry(registry_server.url) as registry:
        decoder = value_decoder(registry_flow(registry_server.url), registry)
        await decoder.prepare([value])
        with pytest.raises(UndecodableValue, match="schema id 99: unknown to the registry"):
            decoder.decode(value)
        registry_server.register(99, ORDER)  # registered late: the next batch decodes
        await decoder.prepare([value])
        assert decoder.decode(value) == AN_ORDER_JSON
    assert registry_server.requests == [99, 99]


async def test_a_non_avro_schema_is_undecodable(registry_server: RegistryServer) -> None:
    registry_server.register(5, 'syntax = "proto3"; message M {}', schema_type="PROTOBUF")
    value = confluent(5, b"\x00")
    async with SchemaRegistry(registry_server.url) as registry:
        decoder = value_decoder(registry_flow(registry_server.url), registry)
        await decoder.prepare([value])
        with pytest.raises(UndecodableValue, match="PROTOBUF schema, not Avro"):
            decoder.decode(value)


async def test_a_failing_registry_is_a_retry_not_an_undecodable_message(
    registry_server: RegistryServer,
) -> None:
    registry_server.register(42, ORDER)
    registry_server.available = False
    value = confluent(42, avro(AN_ORDER))
    async with SchemaRegistry(registry_server.url) as registry:
        decoder = value_decoder(registry_flow(registry_server.url), registry)
        with pytest.raises(RegistryUnavailable, match="answered 500"):
            await decoder.prepare([value])
        registry_server.available = True
        await decoder.prepare([value])
        assert decoder.decode(value) == AN_ORDER_JSON


async def test_an_unreachable_registry_is_a_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with SchemaRegistry(url) as registry:
        decoder = value_decoder(registry_flow(url), registry)
        with pytest.raises(RegistryUnavailable, match="unreachable"):
            await decoder.prepare([confluent(1, b"")])


async def test_credentials_in_the_url_are_sent_and_never_shown(
    registry_server: RegistryServer,
) -> None:
    registry_server.register(1, ORDER)
    url = registry_server.url.replace("http://", "http://ada:s3cret@")
    async with SchemaRegistry(url) as registry:
        await registry.load([1])
        assert "s3cret" not in registry.display_url
    assert registry_server.authorizations == ["Basic " + base64.b64encode(b"ada:s3cret").decode()]


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[str]]]:
    """A server a redirect could lead to (the cloud's metadata service, say), and the
    paths it was asked for."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"id": 1, "schema": '"string"'})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")), asked


async def test_a_redirect_is_not_followed(elsewhere: tuple[str, list[str]]) -> None:
    target, asked = elsewhere
    async with redirecting_registry(to=target) as url, SchemaRegistry(url) as registry:
        with pytest.raises(RegistryUnavailable) as fetching:
            await registry.load([1])
        with pytest.raises(RegistryUnavailable) as registering:
            await registry.register("orders-value", "string")
    not_followed = "a redirect, which is not followed: give the registry's own URL"
    assert (
        str(fetching.value) == f"schema registry {url} answered 307 for schema id 1, {not_followed}"
    )
    assert str(registering.value) == (
        f"schema registry {url} answered 307 for 'orders-value', {not_followed}"
    )
    assert asked == []


def test_an_avro_decoder_needs_a_schema_from_somewhere() -> None:
    with pytest.raises(ValueError, match="needs an inline schema or a registry"):
        AvroDecoder(None, raw_format=False, registry=None)
