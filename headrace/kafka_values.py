"""Message values of users' Kafka topics: bytes in, the plain JSON value a flow sees out.

Read by Kafka triggers (the scheduler) and the `kafka.consume` task (the workers), so it
lives here rather than with either. One `ValueDecoder` per `valueDeserializer` (JSON,
STRING, AVRO). Avro values are framed the Confluent way (magic byte 0, 4-byte big-endian
schema id, Avro body) or RAW (the body alone), and their writer schema is inline in the
flow or fetched by id from a Confluent Schema Registry (`GET {url}/schemas/ids/{id}`),
where `kafka.produce` also registers the schemas it writes with.

Two failures, two types: `UndecodableValue` is the message's fault (bad bytes, unknown
schema id) and is skipped by the caller; `RegistryUnavailable` is the registry's (down,
5xx, refused credentials) and must be retried, since skipping would lose messages.
This module knows nothing of Kafka consumers or offsets.
"""

from __future__ import annotations

import abc
import base64
import datetime as dt
import io
import logging
import math
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, parse_schema
from fastavro.types import Schema
from yarl import URL

from headrace.errors import HeadraceError
from headrace.flow.triggers import KafkaTrigger

log = logging.getLogger(__name__)

# Confluent wire format: one magic byte (0), then the schema id as a big-endian int32.
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_BYTES = 5
# A registry answers in milliseconds; 10 s means it is not answering.
REGISTRY_TIMEOUT_S = 10.0
# The media type of Confluent's API (v1), for what a client sends.
REGISTRY_MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
# The media types Confluent's API documents, preferred first.
REGISTRY_ACCEPT = (
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; qs=0.9, "
    "application/json; qs=0.5"
)
# What fastavro raises on bytes that do not fit the schema (found by fuzzing it):
# truncated data, bad varints or union indexes, invalid UTF-8, out-of-range dates.
_AVRO_READ_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    SchemaResolutionError,
)


class UndecodableValue(ValueError):
    """A message value that does not fit the trigger's `valueDeserializer`."""


class RegistryUnavailable(HeadraceError):
    """The schema registry did not answer usefully: retry later, skip nothing."""


class SchemaRefused(HeadraceError):
    """The schema registry refused to register a schema (incompatible, invalid): its reason."""


class ValueDecoder(abc.ABC):
    """Decodes one message value; `prepare` first fetches what the values need."""

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        """Make `decode` ready for these values; raises `RegistryUnavailable`."""
        return None  # JSON and STRING need nothing

    @abc.abstractmethod
    def decode(self, raw: bytes) -> Any:
        """The value as plain JSON data; raises `UndecodableValue`."""


class JsonDecoder(ValueDecoder):
    def decode(self, raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UndecodableValue(f"not JSON: {exc}") from exc


class StringDecoder(ValueDecoder):
    def decode(self, raw: bytes) -> Any:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UndecodableValue(f"not STRING: {exc}") from exc


def confluent_frame(raw: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent-framed value."""
    if len(raw) < CONFLUENT_HEADER_BYTES or raw[0] != CONFLUENT_MAGIC:
        raise UndecodableValue(
            "no Confluent header (magic byte 0, then a 4-byte schema id); "
            "a schemaless Avro body needs `avroFormat: RAW`"
        )
    return int.from_bytes(raw[1:CONFLUENT_HEADER_BYTES], "big"), raw[CONFLUENT_HEADER_BYTES:]


def read_avro(body: bytes, writer: Schema, reader: Schema | None = None) -> Any:
    """The Avro binary `body` as plain JSON data; every byte must be used."""
    buffer = io.BytesIO(body)
    try:
        value = schemaless_reader(buffer, writer, reader)
    except _AVRO_READ_ERRORS as exc:
        raise UndecodableValue(f"not Avro of the schema: {type(exc).__name__}: {exc}") from exc
    left = len(body) - buffer.tell()
    if left:
        # Trailing bytes: another schema or framing wrote this, whatever it decoded to.
        raise UndecodableValue(f"{left} byte(s) left after the Avro value: not this schema")
    return json_value(value)


def json_value(value: Any) -> Any:
    """fastavro's Python values as JSON data, so they can be rendered and stored.

    bytes and fixed: base64 text (lossless, and what Kafka Connect's JsonConverter
    does); timestamps, dates and times: ISO 8601 text; decimals: exact text (a float
    would round them); UUIDs: text; NaN and infinities: "NaN", "Infinity", "-Infinity".
    """
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    return value


class SchemaRegistry:
    """Writer schemas by id from a Confluent Schema Registry, and their registration.

    Ids never change meaning in a registry, so a fetched schema is kept for good; an id
    the registry does not know is asked again when a later batch holds it.
    `resolver`: resolves the registry's host name (a worker's checks its operator's
    deny-list); the caller closes it. Redirects are not followed: registries do not
    redirect, and one could lead past the checks made on the registry's URL.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = REGISTRY_TIMEOUT_S,
        resolver: AbstractResolver | None = None,
    ) -> None:
        # Credentials as `user:password@` in the URL are sent as basic auth by aiohttp.
        self._url = URL(url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._schemas: dict[int, Schema] = {}
        self._unusable: dict[int, str] = {}  # id -> why it cannot decode anything

    async def __aenter__(self) -> SchemaRegistry:
        connector = (
            None if self._resolver is None else aiohttp.TCPConnector(resolver=self._resolver)
        )
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def display_url(self) -> str:
        """The URL without credentials, for logs."""
        return str(self._url.with_user(None))

    async def load(self, schema_ids: Iterable[int]) -> None:
        """Fetch the ids not cached yet; raises `RegistryUnavailable`."""
        for schema_id in sorted(set(schema_ids) - self._schemas.keys()):
            self._unusable.pop(schema_id, None)
            schema, reason = await self._fetch(schema_id)
            if schema is not None:
                self._schemas[schema_id] = schema
            else:
                self._unusable[schema_id] = reason

    async def register(self, subject: str, schema: Any) -> int:
        """The id of `schema` (JSON data) under `subject`, registered if new, as Confluent's
        serializers do (`POST /subjects/{subject}/versions`: the same schema gets the same
        id). Raises `SchemaRefused` (incompatible, invalid) or `RegistryUnavailable`."""
        assert self._session is not None, "use the registry as `async with`"
        url = self._url / "subjects" / subject / "versions"
        body = orjson.dumps({"schema": orjson.dumps(schema).decode()})
        headers = {"Accept": REGISTRY_ACCEPT, "Content-Type": REGISTRY_MEDIA_TYPE}
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status, answer = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailable(
                f"schema registry {self.display_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            parsed = None
        if status == 200 and isinstance(parsed, dict) and isinstance(parsed.get("id"), int):
            return parsed["id"]
        if 300 <= status < 400:
            raise RegistryUnavailable(self._redirected(status, f"for {subject!r}"))
        # Confluent's errors: {"error_code": 42201, "message": "Invalid schema"}.
        reason = parsed.get("message") if isinstance(parsed, dict) else None
        code = parsed.get("error_code") if isinstance(parsed, dict) else None
        said = f"{status}{'' if code is None else f', error {code}'}"
        reason = reason or answer[:200].decode("utf-8", errors="replace").strip() or "no reason"
        registry = f"schema registry {self.display_url}"
        if 400 <= status < 500 and status != 429:  # the schema's or the flow's fault
            raise SchemaRefused(f"{registry} refused the schema of {subject!r} ({said}): {reason}")
        raise RegistryUnavailable(f"{registry} gave no id for {subject!r} ({said}): {reason}")

    def schema(self, schema_id: int) -> Schema:
        """The writer schema of a loaded id; raises `UndecodableValue`."""
        schema = self._schemas.get(schema_id)
        if schema is None:
            reason = self._unusable.get(schema_id, "not loaded")
            raise UndecodableValue(f"schema id {schema_id}: {reason}")
        return schema

    async def _fetch(self, schema_id: int) -> tuple[Schema | None, str]:
        assert self._session is not None, "use the registry as `async with`"
        url = self._url / "schemas" / "ids" / str(schema_id)
        try:
            async with self._session.get(
                url, headers={"Accept": REGISTRY_ACCEPT}, allow_redirects=False
            ) as response:
                if response.status == 404:  # Confluent's error 40403: no such schema
                    return None, f"unknown to the registry at {self.display_url}"
                if 300 <= response.status < 400:
                    raise RegistryUnavailable(
                        self._redirected(response.status, f"for schema id {schema_id}")
                    )
                if response.status != 200:
                    # 401/403 are our configuration, 429/5xx the registry's state: not
                    # the message's fault, so retry rather than skip.
                    raise RegistryUnavailable(
                        f"schema registry {self.display_url} answered {response.status} "
                        f"for schema id {schema_id}"
                    )
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryUnavailable(
                f"schema registry {self.display_url} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        return self._schema_of(schema_id, body)

    def _redirected(self, status: int, what: str) -> str:
        return (
            f"schema registry {self.display_url} answered {status} {what}, a redirect,"
            " which is not followed: give the registry's own URL"
        )

    def _schema_of(self, schema_id: int, body: bytes) -> tuple[Schema | None, str]:
        """A 200 answer, `{"schema": "<json text>", "schemaType"?, "references"?}`."""
        try:
            answer = orjson.loads(body)
            text = answer["schema"]
            schema_type = answer.get("schemaType", "AVRO")  # absent: AVRO, the original
            references = answer.get("references")
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            # Say, a proxy's HTML page: the registry's state, not the message's fault.
            raise RegistryUnavailable(
                f"schema registry {self.display_url} gave no schema for id {schema_id}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if schema_type != "AVRO":
            return None, f"a {schema_type} schema, not Avro"
        if references:
            return None, "an Avro schema with references, which are not resolved"
        try:
            return parse_schema(orjson.loads(text)), ""
        except (orjson.JSONDecodeError, SchemaParseException, ValueError, TypeError) as exc:
            return None, f"the registry's schema does not parse: {exc}"
        except KeyError as exc:
            return None, f"the registry's schema does not parse: no key {exc}"


class AvroDecoder(ValueDecoder):
    """Avro values per the trigger's `avroSchema`, `schemaRegistryUrl` and `avroFormat`.

    With a registry, the message's schema id gives the writer schema and an inline
    schema, if any, is the reader's (Avro schema resolution: a stable shape for the
    flow while producers evolve). Without one, the inline schema is the writer's and a
    Confluent header's id is not checked.
    """

    def __init__(
        self, inline: Schema | None, raw_format: bool, registry: SchemaRegistry | None
    ) -> None:
        if registry is None and inline is None:
            raise ValueError("an Avro decoder needs an inline schema or a registry")
        self._inline = inline
        self._raw_format = raw_format
        self._registry = registry

    async def prepare(self, values: Iterable[bytes | None]) -> None:
        if self._registry is None:
            return
        ids = set()
        for raw in values:
            if raw is not None:
                try:
                    ids.add(confluent_frame(raw)[0])
                except UndecodableValue:
                    continue  # `decode` reports it
        await self._registry.load(ids)

    def decode(self, raw: bytes) -> Any:
        if self._raw_format:
            assert self._inline is not None  # the trigger model refuses RAW with a registry
            return read_avro(raw, self._inline)
        schema_id, body = confluent_frame(raw)
        if self._registry is None:
            assert self._inline is not None
            return read_avro(body, self._inline)
        return read_avro(body, self._registry.schema(schema_id), self._inline)


def value_decoder(spec: KafkaTrigger, registry: SchemaRegistry | None = None) -> ValueDecoder:
    """The decoder for a trigger; `registry` is required when it names one."""
    if spec.value_deserializer == "JSON":
        return JsonDecoder()
    if spec.value_deserializer == "STRING":
        return StringDecoder()
    if spec.schema_registry_url and registry is None:
        raise ValueError("this trigger reads schemas from a registry: pass a SchemaRegistry")
    inline = None if spec.avro_schema is None else parse_schema(spec.avro_schema)
    return AvroDecoder(inline, spec.avro_format == "RAW", registry)
