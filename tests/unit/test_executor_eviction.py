"""Ended executions leave the table after the retention window, and leave a tombstone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from headrace import codec, messages
from headrace.config import RETENTION_ENV, Settings
from headrace.core.state import Execution, StateVersionError, TimerKind
from headrace.errors import ConfigError
from headrace.local import service_env
from headrace.messages import CommandKind, CommandStatus, ExecutionCommand, ExecutionEvent
from headrace.services.executor import runtime as runtime_module
from headrace.services.executor.eviction import Tombstone, is_tombstone
from headrace.services.executor.runtime import InputEvent
from headrace.services.executor.stored import task_run_key
from headrace.states import State
from tests.unit.test_core_helpers import T0, log_task, make_flow
from tests.unit.test_executor_runtime import foreach_flow, make_runtime, result_of, start, stored

RETENTION = timedelta(hours=1)


def command(execution_id: str, kind: CommandKind, **fields) -> InputEvent:
    message = ExecutionCommand(
        command_id=f"{kind}-{execution_id}-{len(fields)}",
        execution_id=execution_id,
        kind=kind,
        time=datetime.now(UTC),
        **fields,
    )
    return InputEvent(execution_id.encode(), codec.encode(message), 0)


def evict(execution_id: str) -> InputEvent:
    return command(execution_id, CommandKind.TIMER, payload={"timer": str(TimerKind.EVICT)})


async def ended_execution():
    """A runtime holding `ex1`, ended SUCCESS at T0 (a log task's result)."""
    runtime, table, producer = make_runtime(chain=make_flow(log_task("a"), flow_id="chain"))
    runtime.retention = RETENTION
    await runtime.process_batch([start("ex1", "chain")])
    (request,) = producer.of("ex1", messages.TaskRequest)
    result = messages.TaskResult("ex1", request.task_run_id, 1, State.SUCCESS, T0, T0)
    await runtime.process_batch([InputEvent(b"ex1", codec.encode(result), 0)])
    assert stored(table, "ex1").state is State.SUCCESS
    return runtime, table, producer


async def test_an_ended_execution_gets_an_eviction_timer_at_its_end_plus_retention():
    runtime, table, _ = await ended_execution()
    execution = stored(table, "ex1")
    due = execution.histories[-1].date + RETENTION
    # A queue of their own: a backlog of evictions never delays the core's timers.
    assert runtime.timer_index.next_due() is None
    held = runtime.eviction_index.take_due(due, 10)
    assert [(i, t.due, t.kind) for i, t in held] == [("ex1", due, TimerKind.EVICT)]
    # A recovered partition indexes it again.
    runtime.evictions.clear()
    assert await runtime.rebuild_timers() == 0  # no core timer
    assert [t.kind for _, t in runtime.eviction_index.take_due(due, 10)] == [TimerKind.EVICT]


async def test_eviction_leaves_a_tombstone_that_ignores_redeliveries_and_answers_commands(
    monkeypatch,
):
    runtime, table, producer = await ended_execution()
    ended = stored(table, "ex1")
    await runtime.process_batch([evict("ex1")])  # fired early: not due yet
    assert stored(table, "ex1") == ended

    later = ended.histories[-1].date + RETENTION + timedelta(seconds=1)
    monkeypatch.setattr(runtime_module, "datetime", frozen_datetime(later))
    await runtime.process_batch([evict("ex1")])
    raw = table.store.data[b"ex1"]
    assert is_tombstone(raw) and len(raw) < 100
    assert producer.stored[-1] == ("state-changelog", b"ex1", raw)  # recovered as such
    assert Tombstone.from_bytes(raw) == Tombstone(
        State.SUCCESS, ended.seq, ended.histories[-1].date
    )
    assert await runtime.rebuild_timers() == 0  # nothing left
    assert runtime.eviction_index.next_due() is None

    sent_before = len(producer.sent)
    await runtime.process_batch([start("ex1", "chain")])  # the same start, delivered again
    assert table.store.data[b"ex1"] == raw and len(producer.sent) == sent_before
    await runtime.process_batch([command("ex1", CommandKind.RESTART)])
    (answer,) = [e for e in producer.of("ex1", ExecutionEvent) if e.command is not None]
    assert answer.command.status is CommandStatus.IGNORED
    assert "evicted" in answer.command.reason and answer.command.state is State.SUCCESS
    assert answer.seq == ended.seq
    assert table.store.data[b"ex1"] == raw


async def test_a_restarted_execution_is_not_evicted(monkeypatch):
    runtime, table, _ = await ended_execution()
    ended = stored(table, "ex1")
    later = ended.histories[-1].date + RETENTION + timedelta(seconds=1)
    execution = Execution.from_bytes(table.store.data[b"ex1"])
    execution.state = State.RUNNING  # as a restart leaves it
    table.store.data[b"ex1"] = execution.to_bytes()
    monkeypatch.setattr(runtime_module, "datetime", frozen_datetime(later))
    await runtime.process_batch([evict("ex1")])
    assert not is_tombstone(table.store.data[b"ex1"])


def frozen_datetime(moment: datetime) -> type:
    """`datetime` whose `now()` is `moment`: the runtime's clock, past the retention."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return moment

    return Frozen


def test_the_retention_comes_from_the_environment_as_an_iso_duration():
    assert Settings.from_env({}).execution_retention == timedelta(days=7)
    assert Settings.from_env({RETENTION_ENV: "PT2H"}).execution_retention == timedelta(hours=2)
    with pytest.raises(ConfigError, match=r"HEADRACE_EXECUTION_RETENTION: invalid duration"):
        Settings.from_env({RETENTION_ENV: "7 days"})
    with pytest.raises(ConfigError, match="must be longer than zero"):
        Settings.from_env({RETENTION_ENV: "PT0S"})


def test_an_older_executor_stops_on_a_tombstone_rather_than_dropping_its_events():
    """It reads the tombstone as a state of a newer format: exit 78, as in any rolling
    upgrade, never "corrupt, events dropped"."""
    tombstone = Tombstone(State.SUCCESS, 7, T0).to_bytes()
    with pytest.raises(StateVersionError):
        Execution.from_bytes(tombstone)


@pytest.mark.parametrize("retention", [timedelta(days=14), timedelta(seconds=0.5)])
def test_server_local_hands_the_retention_to_its_services_as_it_was_set(retention):
    env = service_env(Settings(execution_retention=retention))
    assert Settings.from_env(env).execution_retention == retention


async def test_an_evicted_big_execution_deletes_its_task_runs_from_the_table_and_changelog(
    monkeypatch,
):
    runtime, table, producer = make_runtime(each=foreach_flow(40))
    runtime.retention = RETENTION
    await runtime.process_batch([start("ex1", "each", {"items": list(range(40))})])
    requests = producer.of("ex1", messages.TaskRequest)
    await runtime.process_batch([result_of(request) for request in requests])
    ended = stored(table, "ex1")
    assert ended.state is State.SUCCESS and len(table.store.data) == 1 + 41

    later = ended.histories[-1].date + RETENTION + timedelta(seconds=1)
    monkeypatch.setattr(runtime_module, "datetime", frozen_datetime(later))
    await runtime.process_batch([evict("ex1")])

    assert list(table.store.data) == [b"ex1"] and is_tombstone(table.store.data[b"ex1"])
    deleted = [key for _, key, value in producer.stored[-42:] if value is None]
    assert deleted == [task_run_key(b"ex1", position) for position in range(41)]
