"""Kestra's `retry`: keys, defaults and the executor's rules, driven through the core.

Sources: Kestra's `AbstractRetry` (maxAttempts/maxAttempt, maxDuration, warningOnRetry,
behavior), `ExecutorService.handleChildWorkerTaskResult` (task, then parent, then flow
retry), `TaskRun.nextRetryDate` / `ExecutionService.nextRetryDate` (what is counted),
`Worker` (warningOnRetry) and `RetryCaseTest` (the end states).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from headrace import messages
from headrace.core.events import ChildEnded, Kill, SendCommand, Start, StartExecution
from headrace.core.retries import chain_of
from headrace.flow.limits import MAX_ATTEMPTS
from headrace.flow.loader import load_flow_with_warnings
from headrace.flow.model import Flow, RetryBehavior, RetryPolicy
from headrace.messages import CommandKind
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
    timers,
    trigger,
)

CONSTANT = {"type": "constant", "interval": "PT1S"}
NEW_EXECUTION = {**CONSTANT, "maxAttempts": 3, "behavior": "CREATE_NEW_EXECUTION"}


def flow_with(retry: dict[str, Any], *tasks: dict[str, Any], **keys: Any) -> Flow:
    """A flow with a flow-level `retry`."""
    return Flow.model_validate(
        {"id": "demo", "namespace": "company.team", "retry": retry, "tasks": list(tasks), **keys}
    )


def fail_until_given_up(run: Run, request: messages.TaskRequest, now: datetime) -> list[Any]:
    """Fail every attempt, firing each retry timer; the commands of the last step."""
    while True:
        commands = run.send(finished(request, State.FAILED, error="boom"), now)
        found = timers(commands)
        if not found:
            return commands
        now = found[0].due
        (request,) = requests(run.send(fired(run.execution.id, found[0]), now))


def new_executions(commands: list[Any]) -> list[messages.TriggerEvent]:
    return [c.trigger for c in commands if isinstance(c, StartExecution)]


# ------------------------------------------------------------------ the keys


def test_max_attempt_is_kestras_older_name_of_max_attempts():
    old = RetryPolicy.model_validate({**CONSTANT, "maxAttempt": 4})
    new = RetryPolicy.model_validate({**CONSTANT, "maxAttempts": 4})
    assert old == new and old.max_attempts == 4
    with pytest.raises(ValidationError, match="maxAttempt"):
        RetryPolicy.model_validate({**CONSTANT, "maxAttempts": 4, "maxAttempt": 5})


def test_defaults_are_kestras():
    policy = RetryPolicy.model_validate({**CONSTANT, "maxAttempts": 2})
    assert policy.behavior is RetryBehavior.RETRY_FAILED_TASK
    assert policy.warning_on_retry is False
    with pytest.raises(ValidationError, match="RETRY_FAILED_TASK"):
        RetryPolicy.model_validate({**CONSTANT, "maxAttempts": 2, "behavior": "AGAIN"})


def test_max_duration_alone_bounds_attempts_up_to_the_safety_cap():
    policy = RetryPolicy.model_validate({**CONSTANT, "maxDuration": "PT10S"})
    assert policy.max_attempts is None and policy.attempt_limit == MAX_ATTEMPTS


def test_a_retry_without_any_bound_loads_with_a_warning_and_the_cap():
    text = (
        "id: demo\nnamespace: company.team\n"
        "retry: {type: constant, interval: PT1S, behavior: CREATE_NEW_EXECUTION}\n"
        "tasks:\n"
        "  - id: a\n    type: io.kestra.plugin.core.log.Log\n    message: hi\n"
        "    retry: {type: constant, interval: PT1S}\n"
    )
    flow, warnings = load_flow_with_warnings(text, "flow.yaml")
    assert flow.retry is not None and flow.tasks[0].retry is not None
    found = sorted((w.path, w.line, w.message.split(":")[0]) for w in warnings)
    assert found == [
        ("retry", 3, "CREATE_NEW_EXECUTION"),
        ("retry", 3, "neither maxAttempts nor maxDuration"),
        ("tasks[0].retry", 8, "neither maxAttempts nor maxDuration"),
    ]
    unbounded = [w.message for w in warnings if w.message.startswith("neither")]
    assert all("headrace stops after 1,000 attempts" in m for m in unbounded)


# --------------------------------------------------------- RETRY_FAILED_TASK


def test_max_attempts_counts_every_attempt_the_first_included():
    # RetryCaseTest.retryFailed: maxAttempts 5 makes 5 attempts, then FAILED.
    run = Run(make_flow(log_task("a", retry={**CONSTANT, "maxAttempts": 5})))
    (request,) = requests(run.send(trigger()))
    fail_until_given_up(run, request, T0)
    assert run.state is State.FAILED
    assert [a.number for a in run.execution.task_runs[0].attempts] == [1, 2, 3, 4, 5]


def test_max_duration_alone_stops_the_retries():
    retry = {**CONSTANT, "interval": "PT10S", "maxDuration": "PT25S"}
    run = Run(make_flow(log_task("a", retry=retry)))
    (request,) = requests(run.send(trigger()))
    fail_until_given_up(run, request, T0)
    # Retries start 10 s and 20 s after the first attempt; the next would be at 30 s.
    assert len(run.execution.task_runs[0].attempts) == 3
    assert run.state is State.FAILED


@pytest.mark.parametrize(
    ("warning_on_retry", "expected"), [(True, State.WARNING), (False, State.SUCCESS)]
)
def test_warning_on_retry_ends_a_late_success_warning(warning_on_retry, expected):
    # RetryCaseTest.retrySuccess: the execution ends WARNING, as its task run does.
    retry = {**CONSTANT, "maxAttempts": 3, "warningOnRetry": warning_on_retry}
    run = Run(make_flow(log_task("a", retry=retry), log_task("b")))
    (request,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(request, State.FAILED, error="flaky")))
    (request,) = requests(run.send(fired("ex1", timer), timer.due))
    (b,) = requests(run.send(finished(request), timer.due))
    assert run.task_states()["a"] is expected
    run.send(finished(b), timer.due)
    assert run.state is expected


def test_warning_on_retry_leaves_a_first_time_success_alone():
    retry = {**CONSTANT, "maxAttempts": 3, "warningOnRetry": True}
    run = Run(make_flow(log_task("a", retry=retry)))
    (request,) = requests(run.send(trigger()))
    run.send(finished(request))
    assert run.state is State.SUCCESS


def test_a_flow_retry_is_the_default_of_every_task_without_one():
    flow = flow_with(
        {**CONSTANT, "maxAttempts": 2, "warningOnRetry": True},
        log_task("a"),
        log_task("b", retry={**CONSTANT, "maxAttempts": 4}),
    )
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(a, State.FAILED, error="x")))
    (a,) = requests(run.send(fired("ex1", timer), timer.due))
    (b,) = requests(run.send(finished(a), timer.due))
    # warningOnRetry is read from the task's own retry only (Kestra's worker).
    assert run.task_states()["a"] is State.SUCCESS
    fail_until_given_up(run, b, timer.due)
    assert len(run.execution.task_runs[1].attempts) == 4  # its own retry wins
    assert run.state is State.FAILED


def test_a_containers_retry_governs_the_tasks_inside_the_closest_one_first():
    inner = {
        "id": "inner",
        "type": "io.kestra.plugin.core.flow.Sequential",
        "retry": {**CONSTANT, "maxAttempts": 2},
        "tasks": [log_task("a")],
    }
    outer = {
        "id": "outer",
        "type": "io.kestra.plugin.core.flow.Sequential",
        "retry": {**CONSTANT, "maxAttempts": 4},
        "tasks": [inner, log_task("b")],
    }
    run = Run(flow_with({**CONSTANT, "maxAttempts": 9}, outer))
    (a,) = requests(run.send(trigger()))
    assert requests(fail_until_given_up(run, a, T0)) == []  # b never starts
    runs = {r.task_id: r for r in run.execution.task_runs}
    assert len(runs["a"].attempts) == 2
    assert run.state is State.FAILED


def test_a_fail_task_with_a_retry_is_attempted_again():
    # RetryCaseTest.retryFail: Kestra's Fail is a runnable task: 3 attempts, then FAILED.
    fail = {
        "id": "stop",
        "type": "io.kestra.plugin.core.execution.Fail",
        "message": "no",
        "retry": {**CONSTANT, "maxAttempts": 3},
    }
    run = Run(make_flow(fail))
    commands = run.send(trigger())
    for _ in range(2):
        (timer,) = timers(commands)
        commands = run.send(fired("ex1", timer), timer.due)
    assert timers(commands) == []
    assert [a.number for a in run.execution.task_runs[0].attempts] == [1, 2, 3]
    assert run.state is State.FAILED
    assert logs(commands)[-1].message == "task 'stop' failed after 3 attempts: no"


def test_a_subflow_with_a_retry_starts_a_new_child_per_attempt():
    sub = {
        "id": "sub",
        "type": "io.kestra.plugin.core.flow.Subflow",
        "namespace": "company.team",
        "flowId": "child",
        "retry": {**CONSTANT, "maxAttempts": 2},
    }
    run = Run(make_flow(sub))
    (first,) = new_executions(run.send(trigger()))
    commands = run.send(child_ended(run, first.execution_id, "FAILED"))
    (timer,) = timers(commands)
    assert run.task_states() == {"sub": State.RETRYING}
    (second,) = new_executions(run.send(fired("ex1", timer), timer.due))
    assert second.execution_id != first.execution_id
    run.send(child_ended(run, second.execution_id, "SUCCESS"), timer.due)
    assert run.state is State.SUCCESS


def child_ended(run: Run, child_id: str, state: str) -> ChildEnded:
    return ChildEnded(
        messages.ExecutionCommand(
            f"ended-{child_id}",
            "ex1",
            CommandKind.CHILD_ENDED,
            T0,
            task_run_id=run.execution.task_runs[0].id,
            payload={"childExecutionId": child_id, "state": state, "outputs": {}},
        )
    )


# ------------------------------------------------------ CREATE_NEW_EXECUTION


def test_create_new_execution_ends_this_one_and_starts_the_next_after_the_wait():
    flow = make_flow(log_task("ok"), log_task("a", retry=NEW_EXECUTION), errors=[log_task("alert")])
    run = Run(flow)
    (ok,) = requests(run.send(trigger(inputs={"n": 1})))
    (a,) = requests(run.send(finished(ok)))
    commands = run.send(finished(a, State.FAILED, error="boom"))
    (timer,) = timers(commands)
    assert timer.due == T0 + timedelta(seconds=1)
    assert run.state is State.RUNNING and run.task_states()["a"] is State.RETRYING
    assert "a new execution starts in 1s" in logs(commands)[0].message

    commands = run.send(fired("ex1", timer), timer.due)
    # Kestra ends it RETRIED: no `errors` branch; headrace says FAILED.
    assert run.state is State.FAILED
    assert run.task_states() == {"ok": State.SUCCESS, "a": State.FAILED}
    (started,) = new_executions(commands)
    assert (started.namespace, started.flow_id, started.flow_revision) == (
        "company.team",
        "demo",
        1,
    )
    assert started.inputs == {"n": 1} and started.labels == {"team": "data"}
    assert started.trigger == {
        "type": "api",
        "retryOf": "ex1",
        "originalId": "ex1",
        "attempt": 2,
        "originalCreatedAt": T0.isoformat(),
    }
    assert started.execution_id != "ex1"
    # The retried end is marked: Flow triggers and stopAfter wait for the chain's last.
    (ended,) = [e.execution for e in events(commands) if e.execution is not None]
    assert ended.trigger["retriedAs"] == started.execution_id
    assert "retriedAs" not in started.trigger


def test_create_new_execution_counts_executions_up_to_max_attempts():
    # RetryCaseTest.retryNewExecution*: RETRIED, RETRIED, then FAILED (maxAttempts 3).
    flow = make_flow(log_task("a", retry=NEW_EXECUTION), errors=[log_task("alert")])
    start: Start = trigger()
    ends = []
    now = T0
    for _ in range(3):
        run = Run(flow)
        (a,) = requests(run.send(start, now))
        commands = run.send(finished(a, State.FAILED, error="boom"), now)
        found = timers(commands)
        if not found:
            # The last one is not retried: it fails as usual, its errors branch running.
            (alert,) = requests(commands)
            run.send(finished(alert), now)
            ends.append((run.state, run.task_states()))
            break
        now = found[0].due
        (started,) = new_executions(run.send(fired(run.execution.id, found[0]), now))
        ends.append((run.state, run.task_states()))
        chain = chain_of(started.execution_id, started.trigger, now)
        assert chain.original_id == "ex1"
        start = Start(started)
    assert [state for state, _ in ends] == [State.FAILED] * 3
    assert ends[-1][1] == {"a": State.FAILED, "alert": State.SUCCESS}
    assert ends[0][1] == ends[1][1] == {"a": State.FAILED}


def test_create_new_execution_max_duration_runs_from_the_first_execution():
    retry = {**NEW_EXECUTION, "maxAttempts": None, "maxDuration": "PT1M", "interval": "PT40S"}
    flow = flow_with(retry, log_task("a"))
    run = Run(flow)
    (a,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(a, State.FAILED, error="x")))
    (started,) = new_executions(run.send(fired("ex1", timer), timer.due))
    second = Run(flow)
    (a,) = requests(second.send(Start(started), timer.due))
    # Another 40 s wait would start the third execution 80 s after the first was created.
    assert timers(second.send(finished(a, State.FAILED, error="x"), timer.due)) == []
    assert second.state is State.FAILED


def test_a_kill_while_waiting_starts_no_new_execution():
    run = Run(make_flow(log_task("a", retry=NEW_EXECUTION)))
    (a,) = requests(run.send(trigger()))
    (timer,) = timers(run.send(finished(a, State.FAILED, error="x")))
    run.send(Kill(messages.ExecutionCommand("kill-1", "ex1", CommandKind.KILL, T0)))
    assert run.state is State.KILLED
    assert new_executions(run.send(fired("ex1", timer), timer.due)) == []


def test_a_subflow_child_retried_as_a_new_execution_stands_alone():
    flow = make_flow(log_task("a", retry=NEW_EXECUTION))
    child_trigger = {
        "type": "subflow",
        "parentExecutionId": "parent",
        "parentTaskRunId": "run",
        "depth": 1,
    }
    start = Start(dataclasses.replace(trigger().trigger, trigger=child_trigger))
    run = Run(flow)
    (a,) = requests(run.send(start))
    (timer,) = timers(run.send(finished(a, State.FAILED, error="x")))
    commands = run.send(fired("ex1", timer), timer.due)
    (started,) = new_executions(commands)
    assert started.trigger["type"] == "replay" and "parentExecutionId" not in started.trigger
    # The parent hears of the failed child (its task may retry in turn).
    sent = [c for c in commands if isinstance(c, SendCommand)]
    assert [c.command.execution_id for c in sent] == ["parent"]
