"""Runs of an attempt: a worker reports each run it starts (RUNNING, with a run id).

A redelivered request (its first worker died) runs again under a new run id: the core
ends the lost run as a FAILED entry and records the new one as another entry of the same
attempt, without spending a retry. A run of an attempt that is over is killed at once.
"""

from __future__ import annotations

from datetime import timedelta

from headrace import messages
from headrace.core.events import Kill, KillTask, Restart
from headrace.core.state import TimerKind
from headrace.core.transition import TIMEOUT_GRACE
from headrace.messages import CommandKind, LogLevel
from headrace.states import State
from tests.unit.test_core_helpers import (
    T0,
    Run,
    events,
    finished,
    fired,
    log_task,
    logs,
    make_flow,
    requests,
    started,
    timers,
    trigger,
)


def kills(commands: list) -> list[KillTask]:
    return [c for c in commands if isinstance(c, KillTask)]


def attempts(run: Run, task_id: str = "a") -> list[tuple[int, State, str | None]]:
    (task_run,) = [r for r in run.execution.task_runs if r.task_id == task_id]
    return [(a.number, a.state, a.run_id) for a in task_run.attempts]


def test_the_first_run_reported_is_the_attempts_own() -> None:
    run = Run(make_flow(log_task("a")))
    (request,) = requests(run.send(trigger()))
    before = run.execution
    later = T0 + timedelta(seconds=3)
    assert run.send(started(request, "r1", later)) == []  # state only: nothing to publish
    assert run.execution is not before
    (attempt,) = run.execution.task_runs[0].attempts
    assert (attempt.run_id, attempt.worker_id, attempt.started_at) == ("r1", "worker-of-r1", later)
    assert run.send(started(request, "r1", later)) == []  # reported twice: no change
    run.send(finished(request, run_id="r1"))
    assert run.state is State.SUCCESS
    assert attempts(run) == [(1, State.SUCCESS, None)]  # the run id goes with the run


def test_a_run_lost_with_its_worker_is_a_failed_entry_and_its_rerun_a_new_one() -> None:
    run = Run(make_flow(log_task("a")))
    (request,) = requests(run.send(trigger()))
    run.send(started(request, "r1"))
    commands = run.send(started(request, "r2", T0 + timedelta(seconds=20)))
    assert attempts(run) == [(1, State.FAILED, "r1"), (1, State.RUNNING, "r2")]
    lost = run.execution.task_runs[0].attempts[0]
    assert lost.error == (
        "lost: worker worker-of-r1 stopped while running it (redelivered to worker worker-of-r2)"
    )
    # The first worker may live on, cut off: its run is killed. The change is published.
    assert kills(commands) == [KillTask("ex1", request.task_run_id, 1, "r1")]
    (event,) = events(commands)
    (changed,) = event.task_runs
    assert [a.state for a in changed.attempts] == [State.FAILED, State.RUNNING]
    (line,) = logs(commands)
    assert line.level is LogLevel.WARN and "not counted as a retry" in line.message
    # The lost run's result, should it come, no longer counts; the new run's does.
    assert run.send(finished(request, State.FAILED, error="late", run_id="r1")) == []
    run.send(finished(request, run_id="r2"))
    assert run.state is State.SUCCESS
    assert attempts(run) == [(1, State.FAILED, "r1"), (1, State.SUCCESS, None)]


def test_a_lost_run_does_not_spend_a_retry() -> None:
    flow = make_flow(
        log_task("a", retry={"type": "constant", "interval": "PT1S", "maxAttempts": 2})
    )
    run = Run(flow)
    (first,) = requests(run.send(trigger()))
    run.send(started(first, "r1"))
    run.send(started(first, "r2"))  # r1 lost
    commands = run.send(finished(first, State.FAILED, error="boom", run_id="r2"))
    assert run.task_states() == {"a": State.RETRYING}  # attempt 1 of 2 failed: one more
    (retry,) = timers(commands)
    (second,) = requests(run.send(fired("ex1", retry), retry.due))
    assert second.attempt == 2
    run.send(started(second, "r3"))
    run.send(finished(second, State.FAILED, error="boom", run_id="r3"))
    assert run.state is State.FAILED
    assert [n for n, _, _ in attempts(run)] == [1, 1, 2]
    (failure,) = [r for r in logs(run.history) if r.level is LogLevel.ERROR]
    assert failure.message == "task 'a' failed after 2 attempts: boom"


def test_a_run_of_an_attempt_that_is_over_is_killed_at_once() -> None:
    """A redelivery after the result was published but before the worker committed:
    the new run must not run to its end."""
    run = Run(make_flow(log_task("a"), log_task("b")))
    (a,) = requests(run.send(trigger()))
    run.send(started(a, "r1"))
    run.send(finished(a, run_id="r1"))
    state = run.execution
    commands = run.send(started(a, "r2"))
    assert commands == [KillTask("ex1", a.task_run_id, 1, "r2")]
    assert run.execution is state  # nothing recorded
    # Also once the execution ended, and for a run of an attempt given up on (lost).
    (b,) = requests(run.history)[1:]
    run.send(started(b, "r3"))
    run.send(started(b, "r4"))  # r3 lost
    assert run.send(started(b, "r3")) == [KillTask("ex1", b.task_run_id, 1, "r3")]
    run.send(finished(b, run_id="r4"))
    assert run.state is State.SUCCESS
    assert run.send(started(b, "r5")) == [KillTask("ex1", b.task_run_id, 1, "r5")]


def test_a_start_reported_by_an_older_worker_changes_nothing() -> None:
    run = Run(make_flow(log_task("a")))
    (a,) = requests(run.send(trigger()))
    run.send(finished(a))  # no run id: matched by attempt number, as before
    assert run.state is State.SUCCESS
    report = started(a, "")
    assert run.send(report) == []


def test_the_timeout_backstop_counts_from_the_runs_start() -> None:
    """A request that waited for a free worker slot must not be failed by the executor
    while its run is within its timeout."""
    run = Run(make_flow(log_task("a", timeout="PT1M")))
    commands = run.send(trigger())
    (a,) = requests(commands)
    (first,) = timers(commands)
    assert first.due == T0 + timedelta(minutes=1) + TIMEOUT_GRACE
    start = T0 + timedelta(seconds=50)
    (moved,) = timers(run.send(started(a, "r1", start), start))
    assert (moved.kind, moved.due) == (
        TimerKind.TIMEOUT,
        start + timedelta(minutes=1) + TIMEOUT_GRACE,
    )
    assert run.execution.timers == [moved]
    # The first timer still fires (the executor's queue has it): it is not due any more.
    assert run.send(fired("ex1", first), first.due) == []
    commands = run.send(fired("ex1", moved), moved.due)
    assert run.state is State.FAILED
    assert kills(commands) == [KillTask("ex1", a.task_run_id, 1)]


def test_a_rerun_while_the_execution_is_being_killed_is_killed_too() -> None:
    """The kill went out while no worker ran the attempt; the worker that then got the
    redelivered request never heard of it."""
    run = Run(make_flow(log_task("a")))
    (a,) = requests(run.send(trigger()))
    run.send(started(a, "r1"))
    kill = messages.ExecutionCommand("kill-1", "ex1", CommandKind.KILL, T0)
    run.send(Kill(kill))
    assert run.state is State.KILLING
    commands = run.send(started(a, "r2"))
    assert kills(commands) == [
        KillTask("ex1", a.task_run_id, 1, "r1"),
        KillTask("ex1", a.task_run_id, 1, "r2"),
    ]
    run.send(finished(a, State.KILLED, error="killed", run_id="r2"))
    assert run.state is State.KILLED
    assert attempts(run) == [(1, State.FAILED, "r1"), (1, State.KILLED, None)]


def test_a_restart_counts_retries_from_the_last_attempt_number() -> None:
    flow = make_flow(
        log_task("a", retry={"type": "constant", "interval": "PT1S", "maxAttempts": 2})
    )
    run = Run(flow)
    (first,) = requests(run.send(trigger()))
    run.send(started(first, "r1"))
    run.send(started(first, "r2"))
    (retry,) = timers(run.send(finished(first, State.FAILED, error="x", run_id="r2")))
    (second,) = requests(run.send(fired("ex1", retry), retry.due))
    run.send(finished(second, State.FAILED, error="x"))
    assert run.state is State.FAILED
    restart = messages.ExecutionCommand("restart-1", "ex1", CommandKind.RESTART, T0)
    (third,) = requests(run.send(Restart(restart)))
    assert third.attempt == 3
    commands = run.send(finished(third, State.FAILED, error="x"))
    (retry,) = timers(commands)
    assert retry.kind is TimerKind.RETRY  # the budget starts anew after a restart
    (line,) = logs(commands)
    assert line.message == "attempt 1 of 2 failed: x; retrying in 1s"
