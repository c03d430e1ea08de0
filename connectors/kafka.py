"""`kafka.produce` and `kafka.consume`: records to and from a user's Kafka topics
(Kestra's `io.kestra.plugin.kafka.Produce` and `…Consume`).

Produce encodes every record first (a wrong key or value fails the task before anything
is sent, naming the record and the field), sends them all and waits until every one is
acknowledged by all in-sync replicas. Consume reads until `maxRecords`, `maxDuration` or
`pollDuration` without a record, and returns the decoded messages as outputs, or with
`store` writes them to a JSON Lines file of the file storage (`stored_results.py`) and
returns its URI; with a `groupId` it starts where that group stopped and commits what it
returned, only once all of it was read and fits in the outputs, or is in its file.

Neither starts anything remote that outlives it: a kill (a cancellation) stops the
client, shielded and bounded (`kafka_client.close_client`). A killed produce may have
written some of its records; a killed consume commits nothing, so the next run reads
the same messages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NoReturn

import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IncompatibleBrokerVersion,
    KafkaError,
    UnknownError,
    UnsupportedVersionError,
)
from fastavro import parse_schema
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from yarl import URL

from headrace.config import Settings
from headrace.connectors.base import (
    MAX_OUTPUTS_BYTES,
    ConnectorProperties,
    TaskContext,
    TaskFailed,
    describe_size,
)
from headrace.connectors.http import WebUrl
from headrace.connectors.kafka_client import (
    CLOSE_TIMEOUT_S,
    BrokerGuard,
    ConsumerProperties,
    ProducerProperties,
    close_client,
    connection_failure,
    kafka_reason,
)
from headrace.connectors.kafka_values import Serde, UnwritableValue, value_encoder
from headrace.connectors.network_policy import NetworkPolicy
from headrace.connectors.stored_results import (
    JsonLines,
    json_line,
    json_lines_file,
    storage_of,
)
from headrace.fetch_wait import FetchWait
from headrace.flow.durations import Duration
from headrace.flow.triggers import AvroSchema, avro_schema_from_text, checked_avro_schema
from headrace.kafka import AdaptiveConsumer
from headrace.kafka_values import (
    AvroDecoder,
    JsonDecoder,
    RegistryUnavailable,
    SchemaRefused,
    SchemaRegistry,
    StringDecoder,
    UndecodableValue,
    ValueDecoder,
)

# What an empty `{"messagesCount": …, "messages": []}` takes, besides the messages.
OUTPUTS_FRAME_BYTES = 64
NOT_IDEMPOTENT = (
    "the brokers refuse idempotent producers: sending without idempotence, so a send"
    " retried after a lost answer may be written twice"
)
# How brokers refuse the producer id that idempotence needs (the only request a
# producer's start sends once the cluster answered): no such request (Kafka before
# 0.11), a version they do not have, or an error of their own (the embedded broker's).
# The cluster's answer whoever asks: remembered, below.
CLUSTER_REFUSALS = (IncompatibleBrokerVersion, UnsupportedVersionError, UnknownError)
# This principal's, for want of the IdempotentWrite permission: another flow's
# credentials may have it, so it is not remembered.
PRINCIPAL_REFUSALS = (ClusterAuthorizationFailedError,)
# Bootstrap servers found to refuse idempotent producers, in this process: asked again,
# they would only refuse again (and aiokafka logs an error each time). Bounded: flows
# may name any number of clusters.
_NOT_IDEMPOTENT: set[str] = set()
MAX_REMEMBERED_CLUSTERS = 1000


# ------------------------------------------------------------------ properties


class AvroProperties(ConnectorProperties):
    """Schemas and the registry, as both tasks take them."""

    key_avro_schema: AvroSchema | None = Field(
        default=None,
        alias="keyAvroSchema",
        description="The keys' Avro schema (a mapping, JSON text or a type name).",
    )
    value_avro_schema: AvroSchema | None = Field(
        default=None,
        alias="valueAvroSchema",
        description="The values' Avro schema (a mapping, JSON text or a type name).",
    )
    schema_registry_url: WebUrl | None = Field(
        default=None,
        alias="schemaRegistryUrl",
        description="A Confluent Schema Registry (user:password@ in the URL for basic auth).",
    )
    serde_properties: dict[str, WebUrl] | None = Field(
        default=None,
        alias="serdeProperties",
        description="Kestra's older form: `schema.registry.url` only.",
    )

    @field_validator("key_avro_schema", "value_avro_schema", mode="before")
    @classmethod
    def _schema_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        alias = cls.model_fields[info.field_name].alias or info.field_name
        return avro_schema_from_text(value, alias)

    @field_validator("key_avro_schema", "value_avro_schema")
    @classmethod
    def _valid_schema(cls, value: AvroSchema | None) -> AvroSchema | None:
        return None if value is None else checked_avro_schema(value)

    @field_validator("serde_properties", mode="before")
    @classmethod
    def _registry_only(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name != "schema.registry.url":
                raise ValueError(
                    f"serdeProperties {name!r} is not read: only schema.registry.url is (put"
                    " basic auth credentials in it as user:password@)"
                )
        return value

    @property
    def registry_url(self) -> str | None:
        if self.schema_registry_url is not None:
            return self.schema_registry_url
        return (self.serde_properties or {}).get("schema.registry.url")

    def _check_avro(self, key_serde: str, value_serde: str, role: str) -> None:
        """Schemas only with AVRO; AVRO with a schema (a consumer may use the registry's)."""
        if self.schema_registry_url is not None and self.serde_properties is not None:
            raise ValueError("set schemaRegistryUrl or serdeProperties, not both")
        for part, serde, schema in (
            ("key", key_serde, self.key_avro_schema),
            ("value", value_serde, self.value_avro_schema),
        ):
            if schema is not None and serde != "AVRO":
                raise ValueError(
                    f"{part}AvroSchema is only read with {part}{role} AVRO, not {serde}"
                )
            needs_inline = role == "Serializer" or self.registry_url is None
            if serde == "AVRO" and schema is None and needs_inline:
                raise ValueError(
                    f"{part}{role} AVRO needs {part}AvroSchema"
                    + ("" if role == "Serializer" else " or schemaRegistryUrl")
                )
        if self.registry_url is not None and "AVRO" not in (key_serde, value_serde):
            raise ValueError("schemaRegistryUrl is only read with AVRO keys or values")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def _positive(duration: timedelta | None) -> timedelta | None:
    if duration is not None and duration <= timedelta(0):
        raise ValueError("must be longer than zero")
    return duration


class Record(ConnectorProperties):
    """One record to produce (Kestra's keys)."""

    key: Any = None
    value: Any = None
    headers: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None,
        description="name: text, or Kestra's list of {name: text} (a name may repeat).",
    )
    partition: int | None = Field(default=None, ge=0, description="Default: by key.")
    timestamp: int | datetime | None = Field(
        default=None, description="Epoch milliseconds or ISO 8601 (default: now)."
    )
    topic: str | None = Field(default=None, description="Default: the task's `topic`.")
    offset: int | None = Field(
        default=None,
        description="Ignored (the brokers give offsets): read by kafka.consume, a message"
        " has one, and its messages may be produced again.",
    )

    @model_validator(mode="after")
    def _key_or_value(self) -> Record:
        if self.key is None and self.value is None:
            raise ValueError("a record needs a key or a value (a tombstone has a key)")
        return self

    @field_validator("headers")
    @classmethod
    def _text_headers(cls, headers: Any) -> Any:
        _header_pairs(headers)
        return headers

    @property
    def header_pairs(self) -> list[tuple[str, bytes]]:
        return _header_pairs(self.headers)


def _header_pairs(headers: dict[str, Any] | list[dict[str, Any]] | None) -> list[tuple[str, bytes]]:
    """Headers as Kafka has them; a value is text (a number or a boolean: its JSON text)."""
    pairs = list(headers.items()) if isinstance(headers, dict) else []
    for item in headers if isinstance(headers, list) else []:
        if len(item) != 1:
            raise ValueError("in a list of headers, each is one {name: value} mapping")
        pairs += item.items()
    for name, value in pairs:
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"header {name!r} is {type(value).__name__}, not text")
    return [(name, _text(value).encode()) for name, value in pairs]


class ProduceProperties(AvroProperties):
    properties: ProducerProperties = Field(
        description="Kafka client properties: bootstrap.servers, security.protocol, sasl.*…"
    )
    topic: str | None = Field(default=None, description="Where records without a topic go.")
    from_: Annotated[list[Record], BeforeValidator(_as_list)] = Field(
        alias="from", description="One record or a list: key, value, headers, partition…"
    )
    key_serializer: Serde = Field(
        default="STRING", alias="keySerializer", description="STRING (default), JSON or AVRO."
    )
    value_serializer: Serde = Field(
        default="STRING", alias="valueSerializer", description="STRING (default), JSON or AVRO."
    )

    # `from` as one mapping is validated as a list of one (errors say `from[0]` then),
    # and remembered, so that the task's own errors say `from`, as the flow does.
    _one_record: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_one_record(cls, data: Any, handler: Any) -> ProduceProperties:
        properties = handler(data)
        properties._one_record = isinstance(data, dict) and isinstance(data.get("from"), dict)
        return properties

    @property
    def records(self) -> list[tuple[str, Record]]:
        """Each record with where the flow wrote it (`from`, `from[2]`), for errors."""
        if self._one_record:
            return [("from", self.from_[0])]
        return [(f"from[{i}]", record) for i, record in enumerate(self.from_)]

    @model_validator(mode="after")
    def _consistent(self) -> ProduceProperties:
        self._check_avro(self.key_serializer, self.value_serializer, "Serializer")
        if self.topic is None:
            for i, record in enumerate(self.from_):
                if record.topic is None:
                    raise ValueError(f"record {i} names no topic, and the task sets no `topic`")
        return self


class ConsumeProperties(AvroProperties):
    properties: ConsumerProperties = Field(
        description="Kafka client properties: bootstrap.servers, security.protocol, sasl.*…"
    )
    topic: str | list[str] = Field(description="A topic or a list of topics.")
    group_id: str | None = Field(
        default=None,
        alias="groupId",
        description="Start where this group stopped, and commit what was read. Without:"
        " read from the start (or `since`), commit nothing.",
    )
    key_deserializer: Serde = Field(
        default="STRING", alias="keyDeserializer", description="STRING (default), JSON or AVRO."
    )
    value_deserializer: Serde = Field(
        default="STRING", alias="valueDeserializer", description="STRING (default), JSON or AVRO."
    )
    avro_format: Literal["CONFLUENT", "RAW"] = Field(
        default="CONFLUENT",
        alias="avroFormat",
        description="CONFLUENT: a 5-byte header (magic byte, schema id), then Avro. RAW: Avro"
        " alone, as kafka.produce writes it without a registry.",
    )
    since: datetime | None = Field(
        default=None, description="Only messages stamped at or after this (ISO 8601)."
    )
    max_records: int | None = Field(
        default=None, ge=1, alias="maxRecords", description="Stop after this many messages."
    )
    max_duration: Duration | None = Field(
        default=None, alias="maxDuration", description="Stop after reading this long."
    )
    poll_duration: Duration = Field(
        default=timedelta(seconds=5),  # Kestra's
        alias="pollDuration",
        description="Stop once no message came for this long (default PT5S).",
    )
    store: bool = Field(
        default=False,
        description="Write the messages to a JSON Lines file in the file storage, one per"
        " line, and output its `uri` instead of `messages`: no 256 KiB bound then"
        " (maxRecords and maxDuration still end the read).",
    )

    @field_validator("topic")
    @classmethod
    def _some_topic(cls, topic: str | list[str]) -> str | list[str]:
        if not topic:
            raise ValueError("names no topic")
        return topic

    _positive_durations = field_validator("max_duration", "poll_duration")(_positive)

    @model_validator(mode="after")
    def _consistent(self) -> ConsumeProperties:
        self._check_avro(self.key_deserializer, self.value_deserializer, "Deserializer")
        if self.avro_format == "RAW" and self.registry_url is not None:
            raise ValueError(
                "a RAW value carries no schema id to look up in the registry: use avroFormat"
                " CONFLUENT with a registry, or RAW with the schemas alone"
            )
        group = self.properties.group_id
        if group is not None and self.group_id is not None and group != self.group_id:
            raise ValueError("groupId and properties.group.id differ: set one")
        if "auto_offset_reset" in self.properties.model_fields_set and self.group is None:
            raise ValueError(
                "properties.auto.offset.reset is only read with groupId: without a group the"
                " task reads from the start, or from `since`"
            )
        return self

    @property
    def group(self) -> str | None:
        return self.group_id or self.properties.group_id

    @property
    def topics(self) -> list[str]:
        return [self.topic] if isinstance(self.topic, str) else list(dict.fromkeys(self.topic))


class ProduceOutputs(BaseModel):
    messages_count: int = Field(alias="messagesCount", description="Records written.")


class ConsumeOutputs(BaseModel):
    messages_count: int = Field(alias="messagesCount", description="Messages read.")
    messages: list[dict[str, Any]] | None = Field(
        default=None,
        description="Without `store`: each message read, with topic, partition, offset,"
        " timestamp (ISO 8601), key, value (decoded), headers (name: text).",
    )
    uri: str | None = Field(
        default=None,
        description="With `store`: the JSON Lines file of the messages (`headrace:///…`),"
        " one per line, each as in `messages`.",
    )


# ------------------------------------------------------------------ shared


@contextlib.asynccontextmanager
async def _registry(url: str | None, policy: NetworkPolicy) -> AsyncIterator[SchemaRegistry | None]:
    if url is None:
        yield None
        return
    policy.check_url(URL(url))
    resolver = None if policy == NetworkPolicy() else policy.resolver()
    try:
        async with SchemaRegistry(url, resolver=resolver) as registry:
            try:
                yield registry
            except (RegistryUnavailable, SchemaRefused) as exc:
                raise TaskFailed(str(exc)) from None
    finally:
        if resolver is not None:  # the registry's session closes its connector, not this
            await resolver.close()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _timestamp_ms(value: int | datetime | None) -> int | None:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # naive: UTC
        return int(aware.timestamp() * 1000)
    return value


# ------------------------------------------------------------------ produce


@dataclasses.dataclass(frozen=True, slots=True)
class _Encoded:
    where: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int | None
    timestamp_ms: int | None


class KafkaProduce:
    """Sends records to a Kafka topic, and waits until every one is written.

    Keys and values are written as STRING, JSON or AVRO (`keySerializer`,
    `valueSerializer`); Avro with the schema in the task and, with `schemaRegistryUrl`,
    registered there and framed as Confluent's serializers do. A record the serializer
    cannot write fails the task before anything is sent, naming the record and the field;
    a record the brokers refuse fails it naming the record and how many were written.
    """

    Properties = ProduceProperties
    Outputs = ProduceOutputs
    aliases = ("io.kestra.plugin.kafka.Produce",)
    uses_workdir = False

    async def run(self, properties: ProduceProperties, context: TaskContext) -> dict[str, Any]:
        policy = NetworkPolicy.from_environment()
        async with _registry(properties.registry_url, policy) as registry:
            records = await _encode(properties, registry)
        async with BrokerGuard(policy) as guard:
            producer = await _start_producer(properties.properties, context, guard)
            try:
                await _check_partitions(producer, records)
                await _send(producer, records)
            finally:
                if guard.refusal is not None:
                    # Records waiting for a refused broker can never be sent, and stopping
                    # would wait for them (CLOSE_TIMEOUT_S): failed now, as aiokafka fails
                    # them when its sender dies.
                    producer._message_accumulator.fail_all(guard.refusal)
                await close_client(producer)
        topics = ", ".join(dict.fromkeys(record.topic for record in records))
        await context.info(f"sent {len(records)} record(s) to {topics or 'no topic'}")
        return {"messagesCount": len(records)}


async def _encode(properties: ProduceProperties, registry: SchemaRegistry | None) -> list[_Encoded]:
    """Every record as bytes, before anything is sent; the schemas registered first."""
    records = properties.records
    topic_of = {where: record.topic or properties.topic or "" for where, record in records}
    keys = value_encoder(properties.key_serializer, properties.key_avro_schema, registry, "key")
    values = value_encoder(
        properties.value_serializer, properties.value_avro_schema, registry, "value"
    )
    await keys.prepare(topic_of[w] for w, r in records if r.key is not None)
    await values.prepare(topic_of[w] for w, r in records if r.value is not None)
    encoded = []
    for where, record in records:
        topic = topic_of[where]
        try:
            key = None if record.key is None else keys.encode(record.key, topic)
        except UnwritableValue as exc:
            raise TaskFailed(
                _unwritable(f"{where}.key{exc.path}", exc, "key", properties)
            ) from None
        try:
            value = None if record.value is None else values.encode(record.value, topic)
        except UnwritableValue as exc:
            raise TaskFailed(
                _unwritable(f"{where}.value{exc.path}", exc, "value", properties)
            ) from None
        encoded.append(
            _Encoded(
                where,
                topic,
                key,
                value,
                record.header_pairs,
                record.partition,
                _timestamp_ms(record.timestamp),
            )
        )
    return encoded


def _unwritable(where: str, exc: UnwritableValue, part: str, properties: ProduceProperties) -> str:
    serde = properties.key_serializer if part == "key" else properties.value_serializer
    return f"{where} {exc.reason} ({part}Serializer {serde})"


async def _start_producer(
    client: ProducerProperties, context: TaskContext, guard: BrokerGuard
) -> AIOKafkaProducer:
    """A started producer: idempotent unless the brokers refuse it (the embedded broker
    does) and `enable.idempotence` did not insist."""
    servers = client.bootstrap_servers
    idempotent = client.enable_idempotence is not False and servers not in _NOT_IDEMPOTENT
    if client.enable_idempotence is None and not idempotent:
        await context.info(f"{NOT_IDEMPOTENT} (as found earlier)")
    producer = _producer(client, idempotent, guard)
    try:
        await producer.start()
        return producer
    except KafkaError as exc:
        await close_client(producer)
        refused = isinstance(exc, CLUSTER_REFUSALS + PRINCIPAL_REFUSALS)
        if not (idempotent and refused):
            raise await connection_failure(client, exc) from None
        if client.enable_idempotence:
            raise TaskFailed(
                f"the brokers at {servers} refuse idempotent producers ({kafka_reason(exc)}):"
                " set properties.enable.idempotence to false, or leave it out"
            ) from None
        if isinstance(exc, CLUSTER_REFUSALS) and len(_NOT_IDEMPOTENT) < MAX_REMEMBERED_CLUSTERS:
            _NOT_IDEMPOTENT.add(servers)
        await context.info(f"{NOT_IDEMPOTENT} ({kafka_reason(exc)})")
    except BaseException:  # a kill while connecting
        await close_client(producer)
        raise
    producer = _producer(client, idempotent=False, guard=guard)
    try:
        await producer.start()
    except KafkaError as exc:
        await close_client(producer)
        raise await connection_failure(client, exc) from None
    except BaseException:
        await close_client(producer)
        raise
    return producer


def _producer(client: ProducerProperties, idempotent: bool, guard: BrokerGuard) -> AIOKafkaProducer:
    try:
        producer = AIOKafkaProducer(**client.producer_settings(idempotent))
    except (KafkaError, ValueError, RuntimeError) as exc:  # a compression library missing
        raise TaskFailed(f"cannot create the Kafka producer: {exc}") from None
    guard.protect(producer.client)
    return producer


async def _check_partitions(producer: AIOKafkaProducer, records: list[_Encoded]) -> None:
    """Each topic exists (or the brokers create it) and has the partitions records name."""
    for topic in dict.fromkeys(record.topic for record in records):
        try:
            partitions = await producer.partitions_for(topic)
        except KafkaError as exc:
            raise TaskFailed(f"topic {topic!r} is not available: {kafka_reason(exc)}") from None
        for record in records:
            if record.topic == topic and record.partition not in (None, *partitions):
                raise TaskFailed(
                    f"{record.where}.partition: topic {topic!r} has partitions 0 to"
                    f" {max(partitions)}, not {record.partition}"
                )


async def _send(producer: AIOKafkaProducer, records: list[_Encoded]) -> None:
    """Send all, then wait for every acknowledgement; a failure names the first record
    that was not written, and how many were."""
    sent = []
    for index, record in enumerate(records):
        try:
            sent.append(
                await producer.send(
                    record.topic,
                    record.value,
                    key=record.key,
                    partition=record.partition,
                    timestamp_ms=record.timestamp_ms,
                    headers=record.headers,
                )
            )
        except KafkaError as exc:
            await _fail(producer, records, sent, index, exc)
    for index, future in enumerate(sent):
        try:
            await future
        except KafkaError as exc:
            await _fail(producer, records, sent, index, exc)


async def _fail(
    producer: AIOKafkaProducer,
    records: list[_Encoded],
    sent: list[Any],
    index: int,
    exc: KafkaError,
) -> NoReturn:
    # What was sent before it is written, or refused, now (a silent broker: given up).
    with contextlib.suppress(TimeoutError, KafkaError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await producer.flush()
    written = sum(1 for f in sent if f.done() and not f.cancelled() and f.exception() is None)
    raise TaskFailed(
        f"{records[index].where} was not written: {kafka_reason(exc)}"
        f" ({written} of {len(records)} records were)"
    )


# ------------------------------------------------------------------ consume


class KafkaConsume:
    """Reads messages from Kafka topics into the outputs.

    Reads until `maxRecords` messages, `maxDuration`, or `pollDuration` without a new
    message (default PT5S). With `groupId` it starts where that group stopped and commits
    what it returned; without, it reads from the start (or `since`) and commits nothing.
    Keys and values are decoded as STRING, JSON or AVRO. A message that cannot be decoded
    fails the task, naming it; so do messages that outgrow the outputs' 256 KiB: bound
    the read with `maxRecords`, or `store` them in a JSON Lines file of the file storage
    (output `uri`). A failed or killed read commits nothing, and stores no file.
    """

    Properties = ConsumeProperties
    Outputs = ConsumeOutputs
    aliases = ("io.kestra.plugin.kafka.Consume",)
    uses_workdir = False

    async def run(self, properties: ConsumeProperties, context: TaskContext) -> dict[str, Any]:
        files = storage_of(context, "store: true") if properties.store else None
        policy = NetworkPolicy.from_environment()
        client = properties.properties
        async with (
            _registry(properties.registry_url, policy) as registry,
            BrokerGuard(policy) as guard,
        ):
            consumer = AdaptiveConsumer(
                fetch_wait=_fetch_wait(properties.poll_duration),
                **client.consumer_settings(properties.group),
            )
            guard.protect(consumer._client)  # aiokafka keeps the consumer's client private
            try:
                try:
                    await consumer.start()
                except KafkaError as exc:
                    raise await connection_failure(client, exc) from None
                async with contextlib.AsyncExitStack() as stored:
                    file = None
                    if files is not None:
                        name = f"{context.task_id}.jsonl"
                        file = await stored.enter_async_context(
                            json_lines_file(files, name, context.mask)
                        )
                    reader = _Reader(consumer, properties, registry, file)
                    try:
                        await reader.read()
                    except KafkaError as exc:
                        topics = ", ".join(properties.topics)
                        raise TaskFailed(f"reading {topics} failed: {kafka_reason(exc)}") from None
                # The file is whole and in place: only now may the group move past it.
                if properties.group is not None:
                    await reader.commit()
            finally:
                await close_client(consumer)
        topics = ", ".join(properties.topics)
        where = "" if file is None else f" into {file.uri}"
        committed = "" if properties.group is None else f", committed for group {properties.group}"
        await context.info(f"read {reader.count} message(s) from {topics}{where}{committed}")
        if file is not None:
            return {"messagesCount": reader.count, "uri": file.uri}
        return {"messagesCount": reader.count, "messages": reader.messages}


def _fetch_wait(poll: timedelta) -> FetchWait:
    """The embedded broker's low-latency fetch waits (headrace.config), each at most half
    of `pollDuration`: a fetch held longer would end the read before records came."""
    wait = Settings(low_latency=True).fetch_wait()
    cap = max(1, int(poll.total_seconds() * 1000) // 2)
    return dataclasses.replace(wait, busy_ms=min(wait.busy_ms, cap), idle_ms=min(wait.idle_ms, cap))


def _decoder(
    serde: str, schema: AvroSchema | None, raw: bool, registry: SchemaRegistry | None
) -> ValueDecoder:
    if serde == "JSON":
        return JsonDecoder()
    if serde == "STRING":
        return StringDecoder()
    return AvroDecoder(None if schema is None else parse_schema(schema), raw, registry)


class _Reader:
    """One read: where each partition starts, the messages (kept, or added to `file`),
    what to commit."""

    def __init__(
        self,
        consumer: AdaptiveConsumer,
        properties: ConsumeProperties,
        registry: SchemaRegistry | None,
        file: JsonLines | None,
    ) -> None:
        raw = properties.avro_format == "RAW"
        self._consumer = consumer
        self._properties = properties
        self._keys = _decoder(
            properties.key_deserializer, properties.key_avro_schema, raw, registry
        )
        self._values = _decoder(
            properties.value_deserializer, properties.value_avro_schema, raw, registry
        )
        self._next: dict[TopicPartition, int] = {}  # the offset to commit, per partition
        self._file = file
        self.messages: list[dict[str, Any]] = []  # without a file
        self.count = 0
        self._size = OUTPUTS_FRAME_BYTES

    async def read(self) -> None:
        await self._assign()
        properties = self._properties
        started = time.monotonic()
        poll_s = properties.poll_duration.total_seconds()
        limit_s = (
            None if properties.max_duration is None else properties.max_duration.total_seconds()
        )
        while properties.max_records is None or self.count < properties.max_records:
            wait_s = poll_s
            if limit_s is not None:
                wait_s = min(wait_s, limit_s - (time.monotonic() - started))
                if wait_s <= 0:
                    break
            wanted = None
            if properties.max_records is not None:
                wanted = properties.max_records - self.count
            fetched = await self._consumer.getmany(
                timeout_ms=int(wait_s * 1000), max_records=wanted
            )
            if not fetched and wait_s >= poll_s:
                break  # a whole pollDuration without a message
            await self._take(fetched)

    async def _assign(self) -> None:
        consumer, properties = self._consumer, self._properties
        partitions = []
        for topic in properties.topics:
            numbers = consumer.partitions_for_topic(topic)
            if numbers is None:
                # Not in the metadata the consumer started with (created since?): refresh
                # the client's own, which `partitions_for_topic` reads. (`topics()` would
                # fetch a copy of its own and leave this one as it was.)
                await consumer._client.force_metadata_update()
                numbers = consumer.partitions_for_topic(topic)
            if not numbers:
                raise TaskFailed(
                    f"topic {topic!r} does not exist at {properties.properties.bootstrap_servers}"
                )
            partitions += [TopicPartition(topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        fresh = partitions
        if properties.group is not None:
            committed = {tp: await consumer.committed(tp) for tp in partitions}
            fresh = [tp for tp in partitions if committed[tp] is None]
        if properties.since is not None and fresh:
            await self._seek_since(fresh)
        elif properties.group is None:
            await consumer.seek_to_beginning(*partitions)
        for tp in partitions:  # resolves auto.offset.reset, where a group has no offset
            self._next[tp] = await consumer.position(tp)

    async def _seek_since(self, partitions: list[TopicPartition]) -> None:
        since_ms = _timestamp_ms(self._properties.since)
        assert since_ms is not None
        found = await self._consumer.offsets_for_times({tp: since_ms for tp in partitions})
        for tp in partitions:
            if found.get(tp) is None:
                await self._consumer.seek_to_end(tp)  # nothing stamped since: what comes
            else:
                self._consumer.seek(tp, found[tp].offset)

    async def _take(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        # The worker's limit, read where it is enforced; imported here, not at the top,
        # so that processes that only load flows (and these classes) skip the worker.

        records = [record for tp in sorted(fetched) for record in fetched[tp]]
        await self._keys.prepare(record.key for record in records)
        await self._values.prepare(record.value for record in records)
        since_ms = _timestamp_ms(self._properties.since)
        for record in records:
            self._next[TopicPartition(record.topic, record.partition)] = record.offset + 1
            # Brokers find where `since` starts by their time index, and some (the embedded
            # one) answer the start of the log: earlier messages are skipped here.
            if since_ms is not None and record.timestamp < since_ms:
                continue
            message = self._message(record)
            if self._file is not None:
                await self._file.add(json_line(message, _where(record)))
                self.count += 1
                continue
            try:
                self._size += len(orjson.dumps(message)) + 1
            except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits
                raise TaskFailed(f"{_where(record)} is not JSON data: {exc}") from None
            if self._size > MAX_OUTPUTS_BYTES:
                raise TaskFailed(
                    f"the messages read are over the {MAX_OUTPUTS_BYTES // 1024} KiB an attempt's"
                    f" outputs may hold ({describe_size(self._size)} at message"
                    f" {self.count + 1}): set maxRecords to read fewer at a time, or store"
                    " them in a file (store: true); nothing was committed"
                )
            self.messages.append(message)
            self.count += 1

    def _message(self, record: ConsumerRecord) -> dict[str, Any]:
        properties = self._properties
        try:
            if record.key is None:
                key = None
            elif properties.key_deserializer == "STRING":
                # Keys are metadata: a byte that is not UTF-8 must not fail the read
                # (as for Kafka triggers).
                key = record.key.decode("utf-8", errors="replace")
            else:
                key = self._keys.decode(record.key)
        except UndecodableValue as exc:
            raise TaskFailed(
                f"{_where(record)}: the key is {exc} (keyDeserializer"
                f" {properties.key_deserializer}); nothing was committed"
            ) from None
        try:
            value = None if record.value is None else self._values.decode(record.value)
        except UndecodableValue as exc:
            raise TaskFailed(
                f"{_where(record)}: the value is {exc} (valueDeserializer"
                f" {properties.value_deserializer}); nothing was committed"
            ) from None
        return {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(),
            "key": key,
            "value": value,
            # A header name given twice keeps its last value, as for Kafka triggers.
            "headers": {
                name: None if raw is None else raw.decode("utf-8", errors="replace")
                for name, raw in record.headers or ()
            },
        }

    async def commit(self) -> None:
        """Commit, for the group, the offset after the last message returned (or where
        each partition started)."""
        try:
            await self._consumer.commit(dict(self._next))
        except KafkaError as exc:
            raise TaskFailed(
                f"could not commit the offsets of group {self._properties.group}:"
                f" {kafka_reason(exc)} (is another consumer of the group running?)"
            ) from None


def _where(record: ConsumerRecord) -> str:
    return f"message {record.topic}[{record.partition}]@{record.offset}"
