"""The wire format: every message round-trips, is self-describing, and evolves safely."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace import codec
from headrace import messages as m
from headrace.errors import CodecError
from headrace.states import State

NOW = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


def samples() -> list[m.Message]:
    history = [m.StateChange(State.CREATED, NOW), m.StateChange(State.RUNNING, NOW)]
    return [
        m.TriggerEvent(
            "ev1", "ex1", "ns", "flow", 3, {"a": [1, 2]}, NOW, {"team": "x"}, {"type": "api"}
        ),
        m.TaskRequest(
            "ex1", "ns", "flow", 3, "tr1", "t", 2, "shell", {"commands": ["ls"]}, NOW, 5000
        ),
        m.TaskResult("ex1", "tr1", 2, State.FAILED, NOW, NOW, {}, "exit code 1", "w1"),
        m.LogRecord("l1", "ex1", "ns", "flow", NOW, m.LogLevel.WARN, "héllo", "tr1", "t", 2),
        m.ExecutionEvent(
            "ex1",
            4,
            NOW,
            execution=m.ExecutionSnapshot("ns", "flow", 3, State.RUNNING, history, {"a": 1}),
        ),
        m.ExecutionEvent(
            "ex1",
            5,
            NOW,
            task_runs=[
                m.TaskRunSnapshot(
                    "tr1",
                    "t",
                    State.SUCCESS,
                    history,
                    [m.AttemptSnapshot(State.SUCCESS, NOW, NOW)],
                    {"x": 1},
                ),
                m.TaskRunSnapshot("tr2", "u", State.CREATED, history, [], index=7),
            ],
        ),
        m.ExecutionCommand("c1", "ex1", m.CommandKind.TIMER, NOW, "tr1", 2, {"timer": "retry"}),
        m.TaskRequest(
            "ex1", "ns", "flow", 3, "tr2", "t", 1, "log", {}, NOW, None, ["A", "B"], "ab" * 16
        ),
        m.FlowRevision("ns", "flow", 3, "id: flow\n", NOW, deleted=True),
        m.FlowChange("ns", "flow", "c" * 32, m.FlowChangeAction.DELETE, "", NOW),
        m.FlowChangeSet(
            "s" * 32,
            [
                m.FlowChangeItem("ns", "flow", m.FlowChangeAction.SAVE, "id: flow\n"),
                m.FlowChangeItem("ns.sub", "gone", m.FlowChangeAction.DELETE, ""),
            ],
            NOW,
        ),
        m.TriggerSwitch("ns", "flow", "nightly", True, NOW),
    ]


@pytest.mark.parametrize("message", samples(), ids=lambda msg: type(msg).__name__)
def test_every_message_round_trips(message: m.Message) -> None:
    assert codec.decode(codec.encode(message)) == message


@given(
    inputs=json_objects,
    labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    time=times,
    revision=st.integers(1, 2**31 - 1),
)
def test_trigger_round_trips_any_json_inputs(inputs, labels, time, revision) -> None:
    event = m.TriggerEvent("e", "x", "ns", "f", revision, inputs, time, labels)
    assert codec.decode(codec.encode(event)) == event


def test_encoding_is_avro_single_object_readable_by_any_avro_library() -> None:
    """A downstream consumer decodes with the .avsc file alone, no headrace code."""
    record = samples()[3]
    data = codec.encode(record)
    assert data[:2] == b"\xc3\x01"
    schema_dir = Path(codec.__file__).resolve().parents[1] / "schemas"
    schema = fastavro.schema.load_schema(str(schema_dir / "LogRecord.avsc"))
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    assert data[2:10] == bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
    decoded = fastavro.schemaless_reader(io.BytesIO(data[10:]), schema, None)
    assert decoded["message"] == "héllo"
    assert decoded["level"] == "WARN"


def test_an_older_writer_schema_is_read_with_defaults_for_new_fields(tmp_path: Path) -> None:
    """Schema evolution: a producer still on an older LogRecord (no task fields) is decoded."""
    schema_dir = Path(codec.__file__).resolve().parents[1] / "schemas"
    current = json.loads((schema_dir / "LogRecord.avsc").read_text())
    old = dict(
        current,
        fields=[
            f for f in current["fields"] if f["name"] not in ("task_run_id", "task_id", "attempt")
        ],
    )
    path = tmp_path / "LogRecord.avsc"
    path.write_text(json.dumps(old))
    old_schema = codec.load_schema_file(path)
    assert old_schema.fingerprint != codec.registry().current["io.headrace.LogRecord"].fingerprint
    codec.registry().add(old_schema, current=False)

    body = io.BytesIO()
    fastavro.schemaless_writer(
        body,
        old_schema.parsed,
        {
            "id": "l",
            "execution_id": "e",
            "namespace": "n",
            "flow_id": "f",
            "time": NOW,
            "level": "INFO",
            "message": "old",
        },
    )
    decoded = codec.decode(codec.MAGIC + old_schema.fingerprint + body.getvalue())
    assert decoded == m.LogRecord("l", "e", "n", "f", NOW, m.LogLevel.INFO, "old")


def test_a_task_request_from_an_older_executor_decodes_without_secrets() -> None:
    """`TaskRequest.v1.avsc` is bundled: requests written before `secret_names` and
    `secret_nonce` existed still decode during an upgrade, and resolve no secret."""
    current = codec.registry().current["io.headrace.TaskRequest"]
    fields = {f["name"] for f in current.parsed["fields"]}
    (old,) = [
        schema
        for schema in codec.registry().by_fingerprint.values()
        if schema.name == current.name
        and fields - {f["name"] for f in schema.parsed["fields"]}
        == {"secret_names", "secret_nonce", "log_level"}
    ]
    body = io.BytesIO()
    record = {
        "execution_id": "e",
        "namespace": "n",
        "flow_id": "f",
        "flow_revision": 1,
        "task_run_id": "r",
        "task_id": "t",
        "attempt": 1,
        "type": "log",
        "properties": '{"message": "hi"}',
        "timeout_ms": None,
        "time": NOW,
    }
    fastavro.schemaless_writer(body, old.parsed, record)
    decoded = codec.decode(codec.MAGIC + old.fingerprint + body.getvalue())
    assert decoded == m.TaskRequest("e", "n", "f", 1, "r", "t", 1, "log", {"message": "hi"}, NOW)
    assert (decoded.secret_names, decoded.secret_nonce) == ([], "")
    assert decoded.log_level is None


def _older_version(name: str) -> codec.Schema:
    current = codec.registry().current[name]
    (old,) = [
        schema
        for schema in codec.registry().by_fingerprint.values()
        if schema.name == current.name and schema is not current
    ]
    return old


def test_results_and_kills_from_before_run_ids_decode_with_an_empty_one() -> None:
    """`TaskResult.v1` and `TaskKill.v1` are bundled: an older worker's results and an
    older executor's kills still decode during an upgrade (a kill for every run)."""
    for name, record, expected in [
        (
            "io.headrace.TaskResult",
            {
                "execution_id": "e",
                "task_run_id": "r",
                "attempt": 2,
                "state": "SUCCESS",
                "outputs": "{}",
                "error": None,
                "started_at": NOW,
                "ended_at": NOW,
                "worker_id": "w",
            },
            m.TaskResult("e", "r", 2, State.SUCCESS, NOW, NOW, {}, None, "w", ""),
        ),
        (
            "io.headrace.TaskKill",
            {"execution_id": "e", "task_run_id": "r", "attempt": 2, "time": NOW},
            m.TaskKill("e", "r", 2, NOW, ""),
        ),
    ]:
        old = _older_version(name)
        assert "run_id" not in {f["name"] for f in old.parsed["fields"]}
        body = io.BytesIO()
        fastavro.schemaless_writer(body, old.parsed, record)
        assert codec.decode(codec.MAGIC + old.fingerprint + body.getvalue()) == expected


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "bad marker"),
        (b'{"json": true}', "bad marker"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "unknown schema fingerprint"),
    ],
)
def test_garbage_is_refused_with_a_codec_error(data: bytes, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        codec.decode(data)


def test_truncated_body_is_a_codec_error() -> None:
    data = codec.encode(samples()[0])
    with pytest.raises(CodecError, match="corrupt"):
        codec.decode(data[:-5])


def test_times_keep_microseconds_and_utc() -> None:
    later = NOW + timedelta(microseconds=7)
    event = m.TriggerEvent("e", "x", "ns", "f", 1, {}, later)
    decoded = codec.decode(codec.encode(event))
    assert decoded.time == later
    assert decoded.time.tzinfo is not None


def _raw(schema_name: str, record: dict) -> bytes:
    """Bytes that are valid Avro for the current schema, whatever the fields hold."""
    schema = codec.registry().current[schema_name]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema.parsed, record)
    return codec.MAGIC + schema.fingerprint + body.getvalue()


def test_invalid_json_inside_valid_avro_is_a_codec_error() -> None:
    trigger = {
        "event_id": "e",
        "execution_id": "x",
        "namespace": "ns",
        "flow_id": "f",
        "flow_revision": 1,
        "inputs": "{not json",
        "time": NOW,
        "labels": {},
        "trigger": "{}",
    }
    with pytest.raises(CodecError, match=r"invalid io\.headrace\.TriggerEvent"):
        codec.decode(_raw("io.headrace.TriggerEvent", trigger))


def test_invalid_json_in_a_nested_snapshot_is_a_codec_error() -> None:
    event = samples()[4]
    assert isinstance(event, m.ExecutionEvent) and event.execution is not None
    record = codec._to_avro(event)
    record["execution"]["outputs"] = "[1, 2"
    with pytest.raises(CodecError, match=r"invalid io\.headrace\.ExecutionEvent"):
        codec.decode(_raw("io.headrace.ExecutionEvent", record))


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1])
def test_an_integer_json_cannot_carry_is_a_codec_error_on_encode(number: int) -> None:
    event = m.TriggerEvent("e", "x", "ns", "f", 1, {"n": number}, NOW)
    with pytest.raises(CodecError, match=r"TriggerEvent\.inputs cannot be encoded as JSON"):
        codec.encode(event)


def _earlier_process_registry() -> codec.SchemaRegistry:
    """What a process not upgraded yet knows: the `.v1` versions are its current ones."""
    folder = Path(codec.__file__).parent.parent / "schemas"
    registry = codec.SchemaRegistry()
    for path in sorted(folder.glob("*.avsc")):
        if path.name.startswith("io.headrace."):
            continue
        has_earlier = (folder / path.name.replace(".avsc", ".v1.avsc")).exists()
        later_earlier = re.search(r"\.v([2-9]|\d\d+)\.avsc$", path.name)  # v2 and up
        if path.name.endswith(".v1.avsc") or not (has_earlier or later_earlier):
            registry.add(codec.load_schema_file(path))  # it knows nothing newer
    return registry


def _written_with(data: bytes, registry: codec.SchemaRegistry) -> codec.Schema | None:
    return registry.by_fingerprint.get(data[2 : codec.HEADER_SIZE])


def test_a_message_is_written_with_the_oldest_version_that_carries_it() -> None:
    """During a rolling upgrade, a process not upgraded yet reads every message that does
    not use what is new (executors exchange commands: a kill, a subflow's end, a slot)."""
    now = datetime(2024, 5, 1, tzinfo=UTC)
    earlier = _earlier_process_registry()
    plain = [
        m.ExecutionCommand("c1", "ex", m.CommandKind.KILL, now),
        m.ExecutionEvent("ex", 3, now, execution=None),
        m.TaskResult("ex", "tr", 1, State.SUCCESS, now, now),
    ]
    for message in plain:
        data = codec.encode(message)
        assert _written_with(data, earlier) is not None, f"{message} needs the new version"
        assert codec.decode(data) == message
    new = [
        m.ExecutionCommand("c2", "ex", m.CommandKind.PROBE, now),  # a symbol v1 lacks
        m.ExecutionEvent(
            "ex",
            3,
            now,
            command=m.CommandOutcome("c1", m.CommandKind.KILL, m.CommandStatus.APPLIED),
        ),
        m.TaskResult("ex", "tr", 1, State.RUNNING, now, now, run_id="run-1"),
        m.ExecutionEvent(
            "ex", 4, now, task_runs=[m.TaskRunSnapshot("r", "t", State.CREATED, [], [])]
        ),
    ]
    for message in new:
        data = codec.encode(message)
        assert _written_with(data, earlier) is None, f"{message} lost what is new"
        assert codec.decode(data) == message


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_executors_event_of_one_task_run_reads_as_a_list_of_one(version: int) -> None:
    """Executors before one-event-per-step wrote a single task run in `task_run`: the
    indexer reads the records still on the topic during an upgrade."""
    folder = Path(codec.__file__).parent.parent / "schemas"
    old = codec.load_schema_file(folder / f"ExecutionEvent.v{version}.avsc")
    assert old.fingerprint in codec.registry().by_fingerprint
    history = [m.StateChange(State.CREATED, NOW), m.StateChange(State.SUCCESS, NOW)]
    record = {
        "execution_id": "ex",
        "seq": 9,
        "time": NOW,
        "execution": None,
        "task_run": {
            "id": "tr",
            "task_id": "t",
            "parent_task_run_id": None,
            "value": None,
            "state": "SUCCESS",
            "histories": [{"state": h.state, "date": h.date} for h in history],
            "attempts": [],
            "outputs": '{"x": 1}',
        },
        "command": None,
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    decoded = codec.decode(codec.MAGIC + old.fingerprint + body.getvalue())
    assert decoded == m.ExecutionEvent(
        "ex",
        9,
        NOW,
        task_runs=[m.TaskRunSnapshot("tr", "t", State.SUCCESS, history, [], {"x": 1})],
    )


def test_a_task_request_with_a_log_level_round_trips_and_one_without_uses_v2() -> None:
    """`log_level` is new in v3: a request without it is written with v2 (older workers
    read it), one with it round-trips as a `LogLevel`."""
    plain = m.TaskRequest("e", "n", "f", 1, "r", "t", 1, "log", {"message": "hi"}, NOW)
    versions = {
        s.fingerprint: s
        for s in codec.registry().by_fingerprint.values()
        if s.name == "io.headrace.TaskRequest"
    }
    written = codec.encode(plain)
    assert "log_level" not in {f["name"] for f in versions[written[2:10]].parsed["fields"]}
    leveled = m.TaskRequest(
        "e", "n", "f", 1, "r", "t", 1, "log", {"message": "hi"}, NOW, log_level=m.LogLevel.WARN
    )
    decoded = codec.decode(codec.encode(leveled))
    assert decoded == leveled
    assert decoded.log_level is m.LogLevel.WARN
