"""Keys and values `kafka.produce` writes: JSON data in, the bytes of a Kafka record out.

One `ValueEncoder` per `keySerializer`/`valueSerializer`:
- STRING: text as UTF-8; a number or a boolean as its JSON text (`42`, `true`);
- JSON: any JSON value, as compact JSON;
- AVRO: the value per the task's schema. Without a schema registry the record holds the
  Avro body alone (RAW: there is no schema id to write); with one, the Confluent framing
  (magic byte 0, the 4-byte schema id, the body), the id being the one the registry gives
  the schema under the subject `{topic}-key` or `{topic}-value` (Confluent's default
  naming), registered as Confluent's serializers do.

No value (null) is no bytes, whatever the serializer: a key-less record, or a tombstone.

Avro values come from JSON data, read as `headrace.kafka_values.json_value` writes them,
so that consumed messages can be produced again: `bytes` and `fixed` from base64 text,
`decimal` from exact text (or a number), timestamps, dates and times from ISO 8601 text
(or their number), a float's `"NaN"`, `"Infinity"`, `"-Infinity"`. Reading is the
triggers' (`headrace.kafka_values`).
"""

from __future__ import annotations

import abc
import base64
import binascii
import io
import math
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import orjson
from fastavro import schemaless_writer
from fastavro.schema import parse_schema
from fastavro.types import Schema
from pydantic import BeforeValidator

from headrace.flow.triggers import AvroSchema
from headrace.kafka_values import CONFLUENT_MAGIC, SchemaRegistry

# Kestra's other serdes: named in the refusal, so that a Kestra flow learns what to use.
KESTRA_ONLY_SERDES = frozenset(
    {"INTEGER", "FLOAT", "DOUBLE", "LONG", "SHORT", "BYTE_ARRAY", "BYTE_BUFFER", "BYTES"}
    | {"UUID", "VOID"}
)
AVRO_PRIMITIVES = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
AVRO_NAMED = frozenset({"record", "enum", "fixed"})
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
FLOAT_TEXTS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _supported_serde(value: Any) -> Any:
    if value in KESTRA_ONLY_SERDES:
        raise ValueError(
            f"{value} is one of Kestra's serdes that headrace does not have: use STRING,"
            " JSON (numbers included) or AVRO"
        )
    return value


Serde = Annotated[Literal["STRING", "JSON", "AVRO"], BeforeValidator(_supported_serde)]
"""A key's or a value's format: STRING, JSON or AVRO."""


class UnwritableValue(ValueError):
    """A key or value the serializer cannot write; `path` is where in it (`.sku`, `[2]`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class ValueEncoder(abc.ABC):
    """Writes keys or values; `prepare` first gets what the topics need (schema ids)."""

    async def prepare(self, topics: Iterable[str]) -> None:
        """Make `encode` ready for these topics; STRING and JSON need nothing."""
        return None

    @abc.abstractmethod
    def encode(self, value: Any, topic: str) -> bytes:
        """The bytes of a value that is not None; raises `UnwritableValue`."""


class StringEncoder(ValueEncoder):
    def encode(self, value: Any, topic: str) -> bytes:
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bool | int | float):
            return orjson.dumps(value)
        raise UnwritableValue(
            "", f"is {_kind(value)}, and STRING writes text: use JSON for objects and lists"
        )


class JsonEncoder(ValueEncoder):
    def encode(self, value: Any, topic: str) -> bytes:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError as exc:  # an integer beyond 64 bits
            raise UnwritableValue("", f"is not JSON: {exc}") from None


class AvroEncoder(ValueEncoder):
    """Avro per `schema`; framed with the registry's id under `{topic}-{suffix}` when
    there is a registry, the body alone otherwise."""

    def __init__(
        self, schema: AvroSchema, registry: SchemaRegistry | None, subject_suffix: str
    ) -> None:
        self._schema = schema
        self._named: dict[str, Any] = {}
        self._parsed = parse_schema(schema, named_schemas=self._named)
        self._registry = registry
        self._suffix = subject_suffix
        self._ids: dict[str, int] = {}  # topic -> the schema's id under its subject

    async def prepare(self, topics: Iterable[str]) -> None:
        if self._registry is not None:
            for topic in sorted(set(topics) - self._ids.keys()):
                subject = f"{topic}-{self._suffix}"
                self._ids[topic] = await self._registry.register(subject, self._schema)

    def encode(self, value: Any, topic: str) -> bytes:
        datum = avro_datum(self._parsed, value, self._named)
        buffer = io.BytesIO()
        if self._registry is not None:
            buffer.write(bytes([CONFLUENT_MAGIC]) + self._ids[topic].to_bytes(4, "big"))
        try:
            schemaless_writer(buffer, self._parsed, datum)
        except (ValueError, TypeError, OverflowError, InvalidOperation) as exc:
            # What the conversion lets through and fastavro still refuses (a decimal
            # with more digits than its precision, say).
            raise UnwritableValue("", f"does not fit the Avro schema: {exc}") from None
        return buffer.getvalue()


def value_encoder(
    serde: str, schema: AvroSchema | None, registry: SchemaRegistry | None, subject_suffix: str
) -> ValueEncoder:
    """The encoder for a serializer; AVRO needs `schema` (the task's properties check it)."""
    if serde == "STRING":
        return StringEncoder()
    if serde == "JSON":
        return JsonEncoder()
    assert schema is not None, "AVRO without a schema: the properties model refuses it"
    return AvroEncoder(schema, registry, subject_suffix)


def avro_datum(schema: Schema, value: Any, named: dict[str, Any], path: str = "") -> Any:
    """`value` (JSON data) as the Python value fastavro writes for `schema` (parsed, its
    named types in `named`); raises `UnwritableValue` saying where and why."""
    if isinstance(schema, str):
        if schema in AVRO_PRIMITIVES:
            return _primitive(schema, value, path)
        return avro_datum(named[schema], value, named, path)  # a named type, by name
    if isinstance(schema, list):
        return _union(schema, value, named, path)
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical is not None and value is not None:
        converted = _logical(logical, schema, value, path)
        if converted is not _NOT_LOGICAL:
            return converted
    if kind == "record":
        return _record(schema, value, named, path)
    if kind == "enum":
        if value not in schema["symbols"]:
            symbols = ", ".join(schema["symbols"])
            raise UnwritableValue(
                path, f"{value!r} is not a symbol of {schema['name']} ({symbols})"
            )
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise UnwritableValue(path, f"is {_kind(value)}, the schema wants an array")
        return [avro_datum(schema["items"], v, named, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise UnwritableValue(path, f"is {_kind(value)}, the schema wants a map")
        return {k: avro_datum(schema["values"], v, named, f"{path}.{k}") for k, v in value.items()}
    if kind == "fixed":
        raw = _base64(value, path, "fixed")
        if len(raw) != schema["size"]:
            raise UnwritableValue(
                path, f"is {len(raw)} bytes, fixed {schema['name']} holds {schema['size']}"
            )
        return raw
    return avro_datum(kind, value, named, path)  # {"type": "string"} and the like


def _primitive(kind: str, value: Any, path: str) -> Any:
    if kind == "null":
        if value is not None:
            raise UnwritableValue(path, f"is {_kind(value)}, the schema wants null")
        return None
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind in ("int", "long") and isinstance(value, int) and not isinstance(value, bool):
        low, high = INT_RANGE if kind == "int" else LONG_RANGE
        if not low <= value <= high:
            raise UnwritableValue(path, f"{value} is out of the range of an Avro {kind}")
        return value
    if kind in ("float", "double"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if value in FLOAT_TEXTS:
            return FLOAT_TEXTS[value]
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "bytes":
        return _base64(value, path, "bytes")
    raise UnwritableValue(path, f"is {_kind(value)}, the schema wants {kind}")


def _union(schema: list[Any], value: Any, named: dict[str, Any], path: str) -> Any:
    """The first branch `value` fits, in the schema's order. A named branch is given by
    name (fastavro's tuple notation): two records may both fit a mapping."""
    refusals = []
    for branch in schema:
        try:
            datum = avro_datum(branch, value, named, path)
        except UnwritableValue as exc:
            refusals.append((branch, exc))
            continue
        name = _branch_name(branch, named)
        return datum if name is None else (name, datum)
    # ["null", X] with a value: what X said is the useful part.
    not_null = [exc for branch, exc in refusals if branch != "null"]
    if len(not_null) == 1:
        raise not_null[0]
    branches = ", ".join(_branch_name(b, named) or str(_type_of(b)) for b in schema)
    raise UnwritableValue(path, f"is {_kind(value)}, which fits no branch of ({branches})")


def _type_of(schema: Any) -> Any:
    return schema.get("logicalType", schema["type"]) if isinstance(schema, dict) else schema


def _branch_name(branch: Any, named: dict[str, Any]) -> str | None:
    if isinstance(branch, str):
        return branch if branch in named else None
    if isinstance(branch, dict) and branch.get("type") in AVRO_NAMED:
        return branch["name"]
    return None


def _record(schema: dict[str, Any], value: Any, named: dict[str, Any], path: str) -> Any:
    if not isinstance(value, dict):
        raise UnwritableValue(
            path, f"is {_kind(value)}, the schema wants a record ({schema['name']})"
        )
    fields = {field["name"]: field for field in schema["fields"]}
    unknown = sorted(set(value) - fields.keys())
    if unknown:
        raise UnwritableValue(
            f"{path}.{unknown[0]}", f"is not a field of {schema['name']} ({', '.join(fields)})"
        )
    datum = {}
    for name, field in fields.items():
        if name in value:
            datum[name] = avro_datum(field["type"], value[name], named, f"{path}.{name}")
        elif "default" not in field:
            raise UnwritableValue(f"{path}.{name}", "is missing, and the schema gives no default")
    return datum  # fastavro writes a missing field's default


_NOT_LOGICAL = object()  # a logical type this module leaves to its underlying type


def _logical(logical: str, schema: dict[str, Any], value: Any, path: str) -> Any:
    """The value of a logical type, from its JSON form; numbers pass as the underlying type."""
    if logical == "decimal":
        return _decimal(schema, value, path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _NOT_LOGICAL
    try:
        if logical == "uuid" and isinstance(value, str):
            return str(uuid.UUID(value))
        if not isinstance(value, str):
            return _NOT_LOGICAL
        if logical == "date":
            return date.fromisoformat(value)
        if logical in ("time-millis", "time-micros"):
            return time.fromisoformat(value)
        if logical in ("timestamp-millis", "timestamp-micros"):
            moment = datetime.fromisoformat(value)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive: UTC
        if logical in ("local-timestamp-millis", "local-timestamp-micros"):
            return datetime.fromisoformat(value).replace(tzinfo=None)
    except (ValueError, InvalidOperation) as exc:
        raise UnwritableValue(path, f"is not a {logical}: {exc}") from None
    return _NOT_LOGICAL


def _decimal(schema: dict[str, Any], value: Any, path: str) -> Decimal:
    """`value` (exact text, or a number) at the schema's scale, within its precision."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnwritableValue(path, f"is {_kind(value)}, the schema wants a decimal")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise UnwritableValue(path, f"{value!r} is not a decimal number") from None
    scale, precision = schema.get("scale", 0), schema["precision"]
    exponent = number.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent > scale:  # NaN and infinities: not ints
        raise UnwritableValue(path, f"{value!r} is not a decimal of scale {scale}")
    number = number.quantize(Decimal(1).scaleb(-scale))
    if len(number.as_tuple().digits) > precision:
        raise UnwritableValue(path, f"{value!r} has more than the {precision} digits of the schema")
    return number


def _base64(value: Any, path: str, kind: str) -> bytes:
    if not isinstance(value, str):
        raise UnwritableValue(path, f"is {_kind(value)}, the schema wants {kind} (as base64 text)")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise UnwritableValue(path, f"is not base64 text, which {kind} is written from") from None


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
