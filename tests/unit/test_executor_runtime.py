"""The executor's shell driven without a broker: a batch in, what it produced and stored out.

The table, producer and flow source are small fakes of the runtime's own protocols
(`Producer`, `Flows`; `StateTable` is a plain record); the core and the codec are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from headrace import codec, messages
from headrace.core.advance import advance
from headrace.core.events import Abort, Start
from headrace.core.state import (
    HEADER_FORMAT_VERSION,
    Execution,
    StateDecodeError,
    StateVersionError,
)
from headrace.errors import CodecError
from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.model import Flow
from headrace.flow_log import FlowNotFound
from headrace.services.executor import runtime as runtime_module
from headrace.services.executor import stored as stored_states
from headrace.services.executor.runtime import ExecutorRuntime, InputEvent, StateTable
from headrace.services.executor.store import DictStore
from headrace.states import State
from tests.unit.test_core_helpers import T0, log_task, make_flow, trigger

STATE_CHANGELOG = "state-changelog"
SLOTS_CHANGELOG = "slots-changelog"


@dataclass
class FakeProducer:
    sent: list[tuple[str, messages.Message]] = field(default_factory=list)
    sizes: list[tuple[str, int]] = field(default_factory=list)  # (topic, bytes) as sent
    # (topic, key, value) of every state written to a changelog
    stored: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    # The keys of each group of records sent as one record batch (`send_together`)
    together: list[list[bytes]] = field(default_factory=list)

    async def send(self, topic, key, value, partition, timestamp, headers) -> asyncio.Future:
        if topic in (STATE_CHANGELOG, SLOTS_CHANGELOG):
            self.stored.append((topic, key, value))
        else:
            self.sent.append((topic, codec.decode(value)))
            self.sizes.append((topic, len(value)))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    async def send_together(self, topic, partition, records) -> asyncio.Future:
        self.together.append([key for key, _ in records])
        for key, value in records:
            self.stored.append((topic, key, value))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    def of(self, execution_id: str, kind: type) -> list[Any]:
        return [m for _, m in self.sent if isinstance(m, kind) and m.execution_id == execution_id]


@dataclass
class FakeFlows:
    flows: dict[str, Flow]

    async def get(self, namespace: str, flow_id: str, revision: int) -> Flow:
        if flow_id not in self.flows:
            raise FlowNotFound(f"flow {namespace}.{flow_id} revision {revision} not found")
        flow = self.flows[flow_id]
        if flow is None:
            raise FlowValidationError(f"{flow_id}@{revision}", [FlowError("tasks", 3, 5, "bad")])
        return flow

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None:
        return 1 if flow_id in self.flows else None


def start(execution_id: str, flow_id: str, inputs: dict[str, Any] | None = None) -> InputEvent:
    event = trigger(execution_id, inputs).trigger
    event.flow_id = flow_id
    return InputEvent(execution_id.encode(), codec.encode(event), 0)


def make_runtime(**flows: Flow | None) -> tuple[ExecutorRuntime, StateTable, FakeProducer]:
    table, producer = StateTable(DictStore({}), STATE_CHANGELOG), FakeProducer()
    runtime = ExecutorRuntime(
        table, StateTable(DictStore({}), SLOTS_CHANGELOG), FakeFlows(flows), producer
    )
    return runtime, table, producer


def stored(table: StateTable, execution_id: str) -> Execution:
    key = execution_id.encode()
    return stored_states.load(table.store, 0, key, table.store.data[key]).execution


def poison(
    monkeypatch: pytest.MonkeyPatch, execution_id: str, error: Exception, abort_too: bool = False
) -> None:
    """Make the core raise `error` on the events of `execution_id` (a bug, a blown stack),
    and on every `Abort` too with `abort_too`."""
    real_advance = runtime_module.advance

    def advance(execution, event, flow, now, carry=None):
        target = event.trigger.execution_id if isinstance(event, Start) else None
        if execution is not None:
            target = execution.id
        if abort_too if isinstance(event, Abort) else target == execution_id:
            raise error
        return real_advance(execution, event, flow, now, carry)

    monkeypatch.setattr(runtime_module, "advance", advance)


async def test_an_event_the_core_cannot_apply_fails_its_execution_and_the_batch_goes_on(
    monkeypatch, caplog
):
    runtime, table, producer = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    await runtime.process_batch([start("ex-bad", "good")])
    (first,) = producer.of("ex-bad", messages.TaskRequest)
    poison(monkeypatch, "ex-bad", RecursionError("maximum recursion depth exceeded"))
    result = messages.TaskResult("ex-bad", first.task_run_id, 1, State.SUCCESS, T0, T0)
    with caplog.at_level(logging.ERROR, logger=runtime_module.__name__):
        await runtime.process_batch(
            [InputEvent(b"ex-bad", codec.encode(result), 0), start("ex-good", "good")]
        )

    assert stored(table, "ex-good").state is State.RUNNING
    (request,) = producer.of("ex-good", messages.TaskRequest)
    assert request.task_id == "a"

    bad = stored(table, "ex-bad")
    assert bad.state is State.FAILED and bad.task_runs[0].state is State.FAILED
    published = producer.of("ex-bad", messages.ExecutionEvent)
    assert published[-1].execution.state is State.FAILED  # the indexer and the UI see it
    (line,) = producer.of("ex-bad", messages.LogRecord)
    assert line.level is messages.LogLevel.ERROR
    assert line.message == (
        "internal error while applying TaskResult: RecursionError: maximum recursion depth exceeded"
    )
    # The traceback is logged once, for the failed event.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "ex-bad" in tracebacks[0].getMessage()


async def test_a_start_the_core_cannot_apply_records_the_execution_failed(monkeypatch):
    runtime, table, producer = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    poison(monkeypatch, "ex-bad", ZeroDivisionError("division by zero"))
    await runtime.process_batch([start("ex-bad", "good")])
    bad = stored(table, "ex-bad")
    assert bad.state is State.FAILED and bad.task_runs == []
    assert producer.of("ex-bad", messages.ExecutionEvent)[-1].execution.state is State.FAILED


async def test_a_step_with_a_command_the_codec_refuses_sends_nothing_of_that_step(monkeypatch):
    """The step's first commands (state changes with seq numbers) encode, its task request
    does not: none may be sent, or the Abort that reuses those seq numbers would be ignored by
    the indexer (it keeps a row only for a higher seq) and the API would show RUNNING."""
    runtime, table, producer = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    batch = [start("ex-bad", "good")]
    real_encode = codec.encode

    def encode(message: messages.Message) -> bytes:
        if isinstance(message, messages.TaskRequest):  # e.g. a rendered property
            raise CodecError("cannot encode io.headrace.TaskRequest: a value it cannot carry")
        return real_encode(message)

    monkeypatch.setattr(codec, "encode", encode)
    await runtime.process_batch(batch)

    assert stored(table, "ex-bad").state is State.FAILED
    published = producer.of("ex-bad", messages.ExecutionEvent)
    seqs = [event.seq for event in published]
    assert seqs == sorted(set(seqs))  # no seq number sent twice
    assert published[-1].execution.state is State.FAILED
    assert all(
        event.execution is None or event.execution.state is not State.RUNNING for event in published
    )
    (line,) = producer.of("ex-bad", messages.LogRecord)
    assert line.message.startswith("internal error while applying TriggerEvent: CodecError")


async def test_a_message_over_what_its_topic_takes_aborts_its_step(monkeypatch):
    """The producer takes state-sized records; the other topics do not: a too big message
    fails its execution instead of the batch (the broker would refuse it on every replay)."""
    monkeypatch.setattr(runtime_module, "MAX_VALUE_BYTES", 4_000)
    flow = make_flow(log_task("a", message="x" * 5_000), flow_id="good")
    runtime, table, producer = make_runtime(good=flow)
    await runtime.process_batch([start("ex-big", "good")])
    assert stored(table, "ex-big").state is State.FAILED
    assert producer.of("ex-big", messages.TaskRequest) == []
    (line,) = producer.of("ex-big", messages.LogRecord)
    assert "a task-requests message of" in line.message


async def test_an_event_that_cannot_be_failed_either_is_dropped(monkeypatch, caplog):
    runtime, table, producer = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    poison(monkeypatch, "ex-bad", MemoryError(), abort_too=True)
    with caplog.at_level(logging.ERROR, logger=runtime_module.__name__):
        await runtime.process_batch([start("ex-bad", "good"), start("ex-good", "good")])
    assert (
        b"ex-bad" not in table.store.data and producer.of("ex-bad", messages.ExecutionEvent) == []
    )
    assert stored(table, "ex-good").state is State.RUNNING
    assert any("ex-bad" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


async def test_a_flow_that_no_longer_validates_drops_the_event_like_a_missing_one(caplog):
    runtime, table, _ = make_runtime(good=make_flow(log_task("a"), flow_id="good"), old=None)
    with caplog.at_level(logging.ERROR, logger=runtime_module.__name__):
        await runtime.process_batch([start("ex-old", "old"), start("ex-good", "good")])
    assert b"ex-old" not in table.store.data and stored(table, "ex-good").state is State.RUNNING
    (record,) = [r for r in caplog.records if "ex-old" in r.getMessage()]
    assert "event dropped" in record.getMessage() and "tasks: bad" in record.getMessage()


async def test_an_unreadable_stored_state_drops_its_events_not_the_batch():
    runtime, table, _ = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    table.store.data[b"ex-corrupt"] = b"[not json"
    await runtime.process_batch([start("ex-corrupt", "good"), start("ex-good", "good")])
    assert table.store.data[b"ex-corrupt"] == b"[not json"
    assert stored(table, "ex-good").state is State.RUNNING


def newer_format(execution: Execution) -> bytes:
    """`execution` as a next headrace version would store it: a higher version number."""
    fields = orjson.loads(execution.to_bytes())
    fields[0] = HEADER_FORMAT_VERSION + 1
    return orjson.dumps(fields)


def test_a_newer_format_version_is_told_apart_from_corrupt_bytes():
    execution = advance(None, trigger("ex1"), make_flow(log_task("a")), T0).execution
    with pytest.raises(StateVersionError):
        Execution.from_bytes(newer_format(execution))
    for corrupt in (b"[not json", b"[1]", b'["3"]', b"{}", b"[true]"):
        with pytest.raises(StateDecodeError) as raised:
            Execution.from_bytes(corrupt)
        assert not isinstance(raised.value, StateVersionError)


async def test_a_state_of_a_newer_format_stops_the_batch_instead_of_dropping_its_events():
    """A rolling upgrade: an older executor must not drop what a newer one stored; the
    batch fails (the process exits, app.py) and is replayed once the upgrade is done."""
    runtime, table, producer = make_runtime(good=make_flow(log_task("a"), flow_id="good"))
    await runtime.process_batch([start("ex-new", "good")])
    (request,) = producer.of("ex-new", messages.TaskRequest)
    newer = newer_format(stored(table, "ex-new"))
    table.store.data[b"ex-new"] = newer
    sent = len(producer.sent)
    result = messages.TaskResult("ex-new", request.task_run_id, 1, State.SUCCESS, T0, T0)
    with pytest.raises(StateVersionError):
        await runtime.process_batch([InputEvent(b"ex-new", codec.encode(result), 0)])
    assert table.store.data[b"ex-new"] == newer and len(producer.sent) == sent


async def retrying_execution() -> tuple[ExecutorRuntime, StateTable]:
    """A runtime holding `ex-retry`, whose failed task waits on a retry timer."""
    retry = {"type": "constant", "interval": "PT1M", "maxAttempts": 3}
    runtime, table, producer = make_runtime(
        good=make_flow(log_task("a", retry=retry), flow_id="good")
    )
    await runtime.process_batch([start("ex-retry", "good")])
    (request,) = producer.of("ex-retry", messages.TaskRequest)
    failed = messages.TaskResult("ex-retry", request.task_run_id, 1, State.FAILED, T0, T0)
    await runtime.process_batch([InputEvent(b"ex-retry", codec.encode(failed), 0)])
    assert stored(table, "ex-retry").timers  # the retry waits on a timer
    return runtime, table


async def test_timer_recovery_skips_a_corrupt_state_and_stops_at_a_newer_one(caplog):
    runtime, table = await retrying_execution()

    table.store.data[b"ex-corrupt"] = b"[not json"
    with caplog.at_level(logging.ERROR, logger=runtime_module.__name__):
        assert await runtime.rebuild_timers() == len(stored(table, "ex-retry").timers)
    assert any("ex-corrupt" in r.getMessage() for r in caplog.records)

    table.store.data[b"ex-new"] = newer_format(stored(table, "ex-retry"))
    with pytest.raises(StateVersionError):
        await runtime.rebuild_timers()


async def test_timer_recovery_of_a_big_table_lets_the_event_loop_run(monkeypatch):
    """The consumer's heartbeats run on the same loop as a rebuild of a million states."""
    monkeypatch.setattr(runtime_module, "REBUILD_SLICE", 10)
    runtime, table = await retrying_execution()
    state = table.store.data[b"ex-retry"]
    for i in range(95):
        table.store.data[f"ex-copy-{i}".encode()] = state
    turns = 0

    async def heartbeat() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    beating = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    turns = 0
    assert await runtime.rebuild_timers() == 96 * len(stored(table, "ex-retry").timers)
    beating.cancel()
    assert turns >= 9  # a turn per 10 of the 96 states


@pytest.mark.parametrize("task", ["bad-child", "missing-child"])
async def test_a_subflow_whose_flow_cannot_load_fails_its_task_not_the_batch(task):
    parent = make_flow(
        {"id": "call", "type": "flow.subflow", "namespace": "company.team", "flowId": task},
        flow_id="parent",
    )
    runtime, _, producer = make_runtime(parent=parent, **{"bad-child": None})
    await runtime.process_batch([start("ex-parent", "parent")])
    (refusal,) = producer.of("ex-parent", messages.ExecutionCommand)
    assert refusal.kind is messages.CommandKind.CHILD_ENDED
    assert refusal.payload["state"] == "FAILED"


def child_flow(**fields: Any) -> Flow:
    inputs = [{"id": "count", "type": "INT", "defaults": 2}]
    return Flow.model_validate(
        {"id": "child", "namespace": "company.team", "inputs": inputs, "tasks": [log_task("a")]}
        | fields
    )


def subflow_parent(inputs: dict[str, Any]) -> Flow:
    call = {"id": "call", "type": "flow.subflow", "namespace": "company.team", "flowId": "child"}
    return make_flow({**call, "inputs": inputs}, flow_id="parent")


async def test_a_subflow_child_is_admitted_like_an_api_start():
    runtime, _, producer = make_runtime(parent=subflow_parent({}), child=child_flow())
    await runtime.process_batch([start("ex-parent", "parent")])
    (child,) = [m for topic, m in producer.sent if topic == "triggers"]
    assert (child.flow_id, child.flow_revision) == ("child", 1)  # the latest, resolved
    assert child.inputs == {"count": 2}  # typed and defaulted against the child's flow
    assert child.trigger["parentExecutionId"] == "ex-parent"


@pytest.mark.parametrize(
    "child, inputs, reason",
    [
        (child_flow(disabled=True), {}, "flow company.team/child is disabled"),
        (child_flow(), {"count": "many"}, "invalid inputs: count: "),
    ],
)
async def test_a_subflow_child_admission_refuses_fails_the_parent_task_saying_why(
    child, inputs, reason
):
    runtime, _, producer = make_runtime(parent=subflow_parent(inputs), child=child)
    await runtime.process_batch([start("ex-parent", "parent")])
    assert [topic for topic, _ in producer.sent].count("triggers") == 0
    (refusal,) = producer.of("ex-parent", messages.ExecutionCommand)
    assert refusal.kind is messages.CommandKind.CHILD_ENDED
    assert refusal.payload["state"] == "FAILED"
    assert refusal.payload["error"].startswith(f"the subflow cannot start: {reason}")


def kill(execution_id: str) -> InputEvent:
    command = messages.ExecutionCommand(
        command_id=f"kill-{execution_id}",
        execution_id=execution_id,
        kind=messages.CommandKind.KILL,
        time=T0,
    )
    return InputEvent(execution_id.encode(), codec.encode(command), 0)


async def test_a_kill_that_overtakes_the_start_kills_the_execution_when_it_starts():
    runtime, table, producer = make_runtime(child=make_flow(log_task("a"), flow_id="child"))
    # A parent killed right after starting its child: the kill arrives first.
    await runtime.process_batch([kill("ex-child")])
    assert table.store.data[b"ex-child"] == runtime_module.KILLED_BEFORE_START
    assert await runtime.rebuild_timers() == 0  # the marker is no state: skipped quietly

    await runtime.process_batch([start("ex-child", "child")])
    child = stored(table, "ex-child")
    assert child.state in (State.KILLING, State.KILLED)
    (request,) = producer.of("ex-child", messages.TaskRequest)
    (stop,) = producer.of("ex-child", messages.TaskKill)  # the worker never runs it
    assert (stop.task_run_id, stop.attempt) == (request.task_run_id, request.attempt)


async def test_a_kill_and_start_in_one_batch_in_either_order():
    for order in ("kill-first", "start-first"):
        runtime, table, _ = make_runtime(child=make_flow(log_task("a"), flow_id="child"))
        events = [kill("ex-child"), start("ex-child", "child")]
        await runtime.process_batch(events if order == "kill-first" else events[::-1])
        assert stored(table, "ex-child").state in (State.KILLING, State.KILLED), order


async def test_a_step_is_one_executions_record_with_the_execution_and_its_task_runs():
    runtime, _, producer = make_runtime(chain=make_flow(log_task("a"), log_task("b")))
    await runtime.process_batch([start("ex1", "chain")])
    (request,) = producer.of("ex1", messages.TaskRequest)
    result = messages.TaskResult("ex1", request.task_run_id, 1, State.SUCCESS, T0, T0)
    await runtime.process_batch([InputEvent(b"ex1", codec.encode(result), 0)])
    started, finished = producer.of("ex1", messages.ExecutionEvent)
    assert (started.seq, started.execution.state) == (1, State.RUNNING)
    assert [(r.task_id, r.state) for r in started.task_runs] == [("a", State.RUNNING)]
    assert (finished.seq, finished.execution) == (2, None)
    assert [(r.task_id, r.state) for r in finished.task_runs] == [
        ("a", State.SUCCESS),
        ("b", State.RUNNING),
    ]


async def test_a_step_creating_thousands_of_task_runs_is_split_into_bounded_records():
    each = {
        "id": "each",
        "type": "flow.foreach",
        "values": "{{ inputs.items }}",
        "concurrencyLimit": 0,
        "tasks": [log_task("say")],
    }
    runtime, table, producer = make_runtime(each=make_flow(each, flow_id="each"))
    await runtime.process_batch([start("ex1", "each", {"items": list(range(3_000))})])
    records = [size for topic, size in producer.sizes if topic == "executions"]
    events = producer.of("ex1", messages.ExecutionEvent)
    assert len(records) == len(events) > 2
    assert max(records) <= runtime_module.EVENT_SPLIT_BYTES
    assert {event.seq for event in events} == {1}  # one step: one seq
    # The snapshot comes last: who sees the execution's state has seen its task runs.
    assert events[-1].execution.state is State.RUNNING
    assert all(event.execution is None for event in events[:-1])
    published = [run for event in events for run in event.task_runs]
    state = stored(table, "ex1")
    assert len(state.task_runs) == 3_001  # the for-each and one run per item
    assert [(r.id, r.index) for r in published] == [
        (run.id, index) for index, run in enumerate(state.task_runs)
    ]


async def test_a_snapshot_and_a_task_run_too_big_together_travel_apart(monkeypatch):
    monkeypatch.setattr(runtime_module, "EVENT_SPLIT_BYTES", 50)
    runtime, _, producer = make_runtime(chain=make_flow(log_task("a")))
    await runtime.process_batch([start("ex1", "chain")])
    first, second = producer.of("ex1", messages.ExecutionEvent)
    assert first.seq == second.seq == 1
    assert (first.execution, [r.task_id for r in first.task_runs]) == (None, ["a"])
    assert (second.execution.state, second.task_runs) == (State.RUNNING, [])


async def test_a_held_executions_revision_missing_from_the_topic_fails_the_batch():
    """It ran on that revision, so the topic is behind: replay the batch, drop nothing."""
    runtime, table, producer = make_runtime(chain=make_flow(log_task("a"), log_task("b")))
    await runtime.process_batch([start("ex1", "chain")])
    (request,) = producer.of("ex1", messages.TaskRequest)
    before = table.store.data[b"ex1"]
    del runtime.flows.flows["chain"]  # as if the topic had lost it
    result = messages.TaskResult("ex1", request.task_run_id, 1, State.SUCCESS, T0, T0)
    with pytest.raises(runtime_module.FlowsBehind, match="revision 1 not found"):
        await runtime.process_batch([InputEvent(b"ex1", codec.encode(result), 0)])
    assert table.store.data[b"ex1"] == before  # nothing applied, nothing stored


async def test_a_start_naming_a_revision_never_stored_is_dropped_saying_why():
    runtime, table, producer = make_runtime()
    await runtime.process_batch([start("ex1", "ghost")])
    assert b"ex1" not in table.store.data
    (line,) = producer.of("ex1", messages.LogRecord)
    assert "revision 1 not found" in line.message


def foreach_flow(count: int, **task: Any) -> Flow:
    each = {
        "id": "each",
        "type": "flow.foreach",
        "values": "{{ inputs.items }}",
        "concurrencyLimit": 0,
        "tasks": [log_task("say", **task)],
    }
    return make_flow(each, flow_id="each")


def result_of(request: messages.TaskRequest, state: State = State.SUCCESS) -> InputEvent:
    result = messages.TaskResult(
        request.execution_id, request.task_run_id, request.attempt, state, T0, T0
    )
    return InputEvent(request.execution_id.encode(), codec.encode(result), 0)


async def test_a_for_each_item_costs_the_state_table_the_same_at_item_10_and_item_2990():
    runtime, table, producer = make_runtime(each=foreach_flow(3_000))
    await runtime.process_batch([start("ex1", "each", {"items": list(range(3_000))})])
    requests = producer.of("ex1", messages.TaskRequest)
    assert len(requests) == 3_000

    writes = []
    for item in (10, 2_990):
        before = len(producer.stored)
        await runtime.process_batch([result_of(requests[item])])
        writes.append([(key, len(value)) for _, key, value in producer.stored[before:]])

    # The header and the one task run that ended (the item's position is its key), as
    # one record batch: a recovery reads both or neither.
    assert [key for key, _ in writes[0]] == [b"ex1", stored_states.task_run_key(b"ex1", 11)]
    assert producer.together[-2:] == [[key for key, _ in write] for write in writes]
    assert [key for key, _ in writes[1]][1:] == [stored_states.task_run_key(b"ex1", 2_991)]
    (header_10, run_10), (header_2990, run_2990) = [[s for _, s in w] for w in writes]
    # The header holds the inputs (the 3,000 items), not the task runs: the same size.
    assert header_10 == header_2990
    assert 0 < run_2990 - run_10 <= 4 and run_10 < 256  # "10" and "2990", twice each
    state = stored(table, "ex1")
    assert [state.task_runs[i].state for i in (11, 2_991, 12)] == [
        State.SUCCESS,
        State.SUCCESS,
        State.RUNNING,
    ]


async def test_timer_recovery_reads_the_timers_of_a_header_and_skips_its_task_runs():
    retry = {"type": "constant", "interval": "PT1M", "maxAttempts": 3}
    runtime, table, producer = make_runtime(each=foreach_flow(40, retry=retry))
    await runtime.process_batch([start("ex1", "each", {"items": list(range(40))})])
    requests = producer.of("ex1", messages.TaskRequest)
    await runtime.process_batch([result_of(requests[3], State.FAILED)])
    assert len(table.store.data) == 1 + 41  # the header and every task run apart
    (timer,) = stored(table, "ex1").timers

    assert await runtime.rebuild_timers() == 1
    assert [t for _, t in runtime.timer_index.take_due(timer.due, 10)] == [timer]


async def test_a_big_execution_a_previous_release_stored_whole_is_stored_apart_at_its_next_batch():
    runtime, table, producer = make_runtime(each=foreach_flow(40))
    await runtime.process_batch([start("ex1", "each", {"items": list(range(40))})])
    requests = producer.of("ex1", messages.TaskRequest)
    whole = stored(table, "ex1")
    table.store.data.clear()  # as the previous release kept it: one format-4 record
    table.store.data[b"ex1"] = whole.to_bytes()

    duplicate = messages.TaskResult("ex1", "no-such-run", 1, State.SUCCESS, T0, T0)
    await runtime.process_batch([InputEvent(b"ex1", codec.encode(duplicate), 0)])
    await runtime.process_batch([result_of(requests[5])])

    assert len(table.store.data) == 1 + 41  # the header and every task run apart
    state = stored(table, "ex1")
    assert [run.state for run in state.task_runs[5:8]] == [
        State.RUNNING,
        State.SUCCESS,
        State.RUNNING,
    ]
