"""Avro encoding of every topic value, self-describing so any consumer can decode it.

Wire format: Avro single-object encoding (marker `C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the Avro binary body). A consumer
looks the fingerprint up among the schema versions it knows, so producers and consumers
upgrade independently: a reader decodes an older writer's message with Avro's schema
resolution (new fields take their defaults).

Schemas live as `.avsc` files in `headrace.schemas`; a file named `io.headrace.X.avsc`
holds a named type other schemas refer to, and `X.vN.avsc` an earlier version of `X`.
A message is written with the oldest version that can carry it (the fields it lacks
hold their defaults, its enum symbols exist there): during a rolling upgrade, a process
not upgraded yet reads every message but those using what is new, and those are read
once it is upgraded. Executors exchange messages among themselves (a subflow's end, a
slot, a kill), so this is what lets old and new run side by side.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import orjson

from headrace import messages as m
from headrace.errors import CodecError
from headrace.messages import Message
from headrace.states import State

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
_EARLIER_VERSION = re.compile(r"\.v(\d+)\.avsc$")
_NO_DEFAULT = object()  # a field without a default: no earlier version can omit it


@dataclass(frozen=True, slots=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes
    canonical: str


def load_schema_file(path: Path) -> Schema:
    parsed = fastavro.schema.load_schema(str(path))
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    fingerprint = bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    return Schema(parsed["name"], parsed, fingerprint, canonical)


@dataclass(frozen=True, slots=True)
class _Writer:
    """An earlier version of a schema, and what a message must hold to be written with it:
    the current schema's fields it lacks, with their defaults."""

    schema: Schema
    missing: tuple[tuple[str, Any], ...]


class SchemaRegistry:
    """Current schema per record name, every known version per fingerprint, and the
    earlier versions a message may still be written with, oldest first."""

    def __init__(self) -> None:
        self.current: dict[str, Schema] = {}
        self.by_fingerprint: dict[bytes, Schema] = {}
        self.earlier: dict[str, list[tuple[int, Schema]]] = {}
        self.writers: dict[str, tuple[_Writer, ...]] = {}

    def add(self, schema: Schema, *, current: bool = True, version: int = 0) -> None:
        self.by_fingerprint[schema.fingerprint] = schema
        if current:
            self.current[schema.name] = schema
        else:
            self.earlier.setdefault(schema.name, []).append((version, schema))

    def _plan_writers(self) -> None:
        for name, current in self.current.items():
            defaults = {f["name"]: f.get("default", _NO_DEFAULT) for f in current.parsed["fields"]}
            writers = []
            for _, schema in sorted(self.earlier.get(name, []), key=lambda entry: entry[0]):
                kept = {f["name"] for f in schema.parsed["fields"]}
                missing = tuple((f, d) for f, d in defaults.items() if f not in kept)
                if all(default is not _NO_DEFAULT for _, default in missing):
                    writers.append(_Writer(schema, missing))
            self.writers[name] = tuple(writers)

    @classmethod
    def bundled(cls) -> SchemaRegistry:
        registry = cls()
        folder = resources.files("headrace.schemas")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".avsc") and not entry.name.startswith("io.headrace."):
                with resources.as_file(entry) as path:
                    schema = load_schema_file(path)
                earlier = _EARLIER_VERSION.search(entry.name)
                version = int(earlier.group(1)) if earlier else 0
                registry.add(schema, current=earlier is None, version=version)
        registry._plan_writers()
        return registry


_registry = SchemaRegistry.bundled()


def registry() -> SchemaRegistry:
    return _registry


def encode(message: Message) -> bytes:
    """The message's bytes; raises `CodecError` for a value the wire format cannot carry
    (an integer beyond 64 bits in a JSON field, a wrong type in an Avro one)."""
    record = _to_avro(message)
    for writer in _registry.writers[message.SCHEMA]:
        if all(record[name] == default for name, default in writer.missing):
            try:
                return _write(writer.schema, record)
            except CodecError:
                pass  # an enum symbol this version lacks: a later one carries it
    return _write(_registry.current[message.SCHEMA], record)


def _write(schema: Schema, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    buffer.write(MAGIC)
    buffer.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(buffer, schema.parsed, record)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode {schema.name}: {exc}") from exc
    return buffer.getvalue()


def decode(data: bytes) -> Message:
    """Decode any topic value; the fingerprint says which message it is."""
    if len(data) < HEADER_SIZE or data[:2] != MAGIC:
        raise CodecError("not an Avro single-object encoded message (bad marker)")
    writer = _registry.by_fingerprint.get(data[2:HEADER_SIZE])
    if writer is None:
        raise CodecError(f"unknown schema fingerprint {data[2:HEADER_SIZE].hex()}")
    reader = _registry.current.get(writer.name)
    if reader is None:
        raise CodecError(f"no current schema for {writer.name}")
    body = io.BytesIO(data[HEADER_SIZE:])
    try:
        if reader is writer:
            record = fastavro.schemaless_reader(body, writer.parsed, None)
        else:
            record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
    except (EOFError, ValueError, IndexError, fastavro.read.SchemaResolutionError) as exc:
        raise CodecError(f"corrupt {writer.name} message: {exc}") from exc
    # Valid Avro can still hold invalid JSON text or an unknown enum value: a consumer
    # must see one error type for every bad message, or one poison message crash-loops it.
    try:
        return _from_avro(_CLASS_BY_SCHEMA[writer.name], record)
    except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
        raise CodecError(f"invalid {writer.name} message: {exc}") from exc


def encode_json(value: Any, what: str = "value") -> str:
    """`value` as JSON text; `CodecError` names `what` when JSON cannot carry it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError, e.g. an int beyond 64 bits
        raise CodecError(f"{what} cannot be encoded as JSON: {exc}") from exc


def _to_avro(message: Message) -> dict[str, Any]:
    record = {name: getattr(message, name) for name in message.__slots__}
    for name in message.JSON_FIELDS:
        record[name] = encode_json(record[name], f"{message.SCHEMA}.{name}")
    if isinstance(message, m.ExecutionEvent):
        if message.execution is not None:
            record["execution"] = _execution_to_avro(message.execution)
        record["task_runs"] = [_task_run_to_avro(run) for run in message.task_runs]
        record["task_run"] = None  # older executors' single task run
        if message.command is not None:
            record["command"] = {
                name: getattr(message.command, name) for name in message.command.__slots__
            }
    elif isinstance(message, m.FlowChangeSet):
        record["changes"] = [
            {name: getattr(item, name) for name in item.__slots__} for item in message.changes
        ]
    return record


def _from_avro(cls: type, record: dict[str, Any]) -> Message:
    for name in cls.JSON_FIELDS:
        record[name] = orjson.loads(record[name])
    if cls is m.ExecutionEvent:
        if record["execution"] is not None:
            record["execution"] = _execution_from_avro(record["execution"])
        task_runs = [_task_run_from_avro(run) for run in record["task_runs"]]
        legacy = record.pop("task_run")
        if legacy is not None:  # written by an older executor: one task run per event
            task_runs.append(_task_run_from_avro(legacy))
        record["task_runs"] = task_runs
        if record.get("command") is not None:
            record["command"] = _outcome_from_avro(record["command"])
    elif cls is m.TaskResult:
        record["state"] = State(record["state"])
    elif cls is m.TaskRequest and record.get("log_level") is not None:
        record["log_level"] = m.LogLevel(record["log_level"])
    elif cls is m.LogRecord:
        record["level"] = m.LogLevel(record["level"])
    elif cls is m.ExecutionCommand:
        record["kind"] = m.CommandKind(record["kind"])
    elif cls is m.SlotRequest:
        record["kind"] = m.SlotRequestKind(record["kind"])
        record["behavior"] = m.ConcurrencyBehavior(record["behavior"])
    elif cls is m.FlowChange:
        record["action"] = m.FlowChangeAction(record["action"])
    elif cls is m.FlowChangeSet:
        record["changes"] = [
            m.FlowChangeItem(
                item["namespace"],
                item["flow_id"],
                m.FlowChangeAction(item["action"]),
                item["source"],
            )
            for item in record["changes"]
        ]
    return cls(**record)


def _outcome_from_avro(record: dict[str, Any]) -> m.CommandOutcome:
    state = record["state"]
    try:
        kind = m.CommandKind(record["kind"])
    except ValueError:  # a kind this reader does not know yet: kept as text, not an error
        kind = record["kind"]
    return m.CommandOutcome(
        command_id=record["command_id"],
        kind=kind,
        status=m.CommandStatus(record["status"]),
        reason=record["reason"],
        state=None if state is None else State(state),
    )


def _histories_to_avro(histories: list[m.StateChange]) -> list[dict[str, Any]]:
    return [{"state": h.state, "date": h.date} for h in histories]


def _histories_from_avro(records: list[dict[str, Any]]) -> list[m.StateChange]:
    return [m.StateChange(State(r["state"]), r["date"]) for r in records]


def _execution_to_avro(snapshot: m.ExecutionSnapshot) -> dict[str, Any]:
    return {
        "namespace": snapshot.namespace,
        "flow_id": snapshot.flow_id,
        "flow_revision": snapshot.flow_revision,
        "state": snapshot.state,
        "histories": _histories_to_avro(snapshot.histories),
        "inputs": encode_json(snapshot.inputs, "execution.inputs"),
        "outputs": encode_json(snapshot.outputs, "execution.outputs"),
        "labels": snapshot.labels,
        "trigger": encode_json(snapshot.trigger, "execution.trigger"),
    }


def _execution_from_avro(record: dict[str, Any]) -> m.ExecutionSnapshot:
    return m.ExecutionSnapshot(
        namespace=record["namespace"],
        flow_id=record["flow_id"],
        flow_revision=record["flow_revision"],
        state=State(record["state"]),
        histories=_histories_from_avro(record["histories"]),
        inputs=orjson.loads(record["inputs"]),
        outputs=orjson.loads(record["outputs"]),
        labels=record["labels"],
        trigger=orjson.loads(record["trigger"]),
    )


def _task_run_to_avro(snapshot: m.TaskRunSnapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "task_id": snapshot.task_id,
        "parent_task_run_id": snapshot.parent_task_run_id,
        "value": snapshot.value,
        "state": snapshot.state,
        "histories": _histories_to_avro(snapshot.histories),
        "attempts": [
            {"state": a.state, "started_at": a.started_at, "ended_at": a.ended_at, "error": a.error}
            for a in snapshot.attempts
        ],
        "outputs": encode_json(snapshot.outputs, "task_run.outputs"),
        "index": snapshot.index,
    }


def _task_run_from_avro(record: dict[str, Any]) -> m.TaskRunSnapshot:
    return m.TaskRunSnapshot(
        id=record["id"],
        task_id=record["task_id"],
        parent_task_run_id=record["parent_task_run_id"],
        value=record["value"],
        state=State(record["state"]),
        histories=_histories_from_avro(record["histories"]),
        attempts=[
            m.AttemptSnapshot(State(a["state"]), a["started_at"], a["ended_at"], a["error"])
            for a in record["attempts"]
        ],
        outputs=orjson.loads(record["outputs"]),
        index=record.get("index", 0),  # absent from an older executor's `task_run`
    )


_CLASS_BY_SCHEMA: dict[str, type] = {cls.SCHEMA: cls for cls in m.MESSAGE_TYPES}
