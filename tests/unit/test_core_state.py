"""The stored form of an execution: exact round trips, compact, corrupt data refused."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from headrace.core.state import (
    Attempt,
    Execution,
    StateDecodeError,
    TaskRun,
    Timer,
    TimerKind,
    decode_task_run,
    encode_task_run,
)
from headrace.messages import StateChange
from headrace.states import State
from tests.unit.test_core_helpers import T0


def _execution() -> Execution:
    later = T0 + timedelta(seconds=1, microseconds=7)
    return Execution(
        id="ex1",
        namespace="company.team",
        flow_id="demo",
        flow_revision=3,
        inputs={"n": 1, "names": ["a", "b"], "nested": {"x": None}},
        labels={"team": "data"},
        trigger={"type": "api"},
        state=State.RUNNING,
        histories=[StateChange(State.CREATED, T0), StateChange(State.RUNNING, T0)],
        task_runs=[
            TaskRun(
                id="tr1",
                task_id="a",
                state=State.SUCCESS,
                histories=[StateChange(State.CREATED, T0), StateChange(State.SUCCESS, later)],
                attempts=[Attempt(1, State.SUCCESS, T0, later, None)],
                outputs={"x": 42},
            ),
            TaskRun(
                id="tr2",
                task_id="b",
                state=State.RETRYING,
                histories=[StateChange(State.RETRYING, later)],
                attempts=[Attempt(1, State.FAILED, later, None, "boom")],
                outputs={},
                parent_task_run_id="tr1",
                value="v",
            ),
        ],
        outputs={},
        seq=5,
        timers=[Timer(later, TimerKind.RETRY, "tr2", 2), Timer(later, TimerKind.TIMEOUT, "tr2", 1)],
        created_at=T0,
    )


def test_round_trip_is_exact():
    execution = _execution()
    restored = Execution.from_bytes(execution.to_bytes())
    assert restored == execution
    assert restored.timers[0].kind is TimerKind.RETRY
    assert restored.task_runs[0].state is State.SUCCESS
    assert restored.created_at.tzinfo is not None
    assert restored.to_bytes() == execution.to_bytes()


def test_applied_command_ids_round_trip():
    execution = _execution()
    execution.applied = ["cmd-1", "cmd-2"]
    assert Execution.from_bytes(execution.to_bytes()) == execution


def test_a_running_attempts_run_and_worker_round_trip():
    execution = _execution()
    execution.task_runs[1].attempts = [
        Attempt(1, State.FAILED, T0, T0, "lost: worker w1 stopped while running it"),
        Attempt(1, State.RUNNING, T0, None, None, run_id="9f3a", worker_id="w2"),
    ]
    restored = Execution.from_bytes(execution.to_bytes())
    assert restored == execution and restored.task_runs[1].attempts[1].run_id == "9f3a"


def test_format_3_states_still_decode():
    current = orjson.loads(_execution().to_bytes())
    assert current[0] == 4
    stored_by_format_3 = orjson.dumps([3, *current[1:]])  # its attempts have 5 fields
    assert Execution.from_bytes(stored_by_format_3) == _execution()


def test_format_2_states_still_decode_with_no_applied_commands():
    current = orjson.loads(_execution().to_bytes())
    assert current[0] == 4 and current[-1] == []
    stored_by_format_2 = orjson.dumps([2, *current[1:-1]])
    restored = Execution.from_bytes(stored_by_format_2)
    assert restored == _execution() and restored.applied == []


def test_stored_form_is_compact():
    # Two task runs, two timers, inputs and outputs: well under half a kilobyte.
    assert len(_execution().to_bytes()) < 450


@pytest.mark.parametrize("data", [b"", b"[", b"[99]", b'[1, "ex1"]', b"{}"])
def test_corrupt_bytes_raise_a_headrace_error(data):
    with pytest.raises(StateDecodeError):
        Execution.from_bytes(data)


def test_a_header_and_its_task_runs_apart_round_trip():
    execution = _execution()
    header, count = Execution.from_header(execution.header_bytes())
    assert count == 2 and header.task_runs == []
    header.task_runs = [decode_task_run(encode_task_run(run)) for run in execution.task_runs]
    assert header == execution
    # A whole state read as a header: nothing apart.
    assert Execution.from_header(execution.to_bytes()) == (execution, None)


def test_a_header_read_as_a_whole_state_is_refused_not_taken_for_an_empty_one():
    with pytest.raises(StateDecodeError, match="stored apart"):
        Execution.from_bytes(_execution().header_bytes())


@pytest.mark.parametrize("count", [-1, "2", [], None])
def test_a_header_with_a_bad_count_is_corrupt(count):
    fields = orjson.loads(_execution().header_bytes())
    fields[10] = count
    with pytest.raises(StateDecodeError):
        Execution.from_header(orjson.dumps(fields))


@pytest.mark.parametrize("data", [b"", b"[", b'["tr1"]', b"{}", b"null"])
def test_a_corrupt_task_run_raises_a_headrace_error(data):
    with pytest.raises(StateDecodeError, match="task run"):
        decode_task_run(data)


def test_snapshots_hold_no_task_runs():
    execution = _execution()
    snapshot = execution.snapshot()
    assert snapshot.state is State.RUNNING and snapshot.flow_revision == 3
    assert not hasattr(snapshot, "task_runs")
    run = execution.task_runs[1].snapshot()
    assert (run.id, run.parent_task_run_id, run.value) == ("tr2", "tr1", "v")
    assert run.attempts[0].error == "boom"
    # Snapshots do not alias the live lists the core keeps appending to.
    execution.histories.append(StateChange(State.SUCCESS, T0))
    assert len(snapshot.histories) == 2
