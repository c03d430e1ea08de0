"""`advance`: one event in, the new execution state and the commands to emit out.

All flow semantics live here, and nothing else does: no I/O, no clock, no randomness
(`now` and every id come in, or are derived from ids that came in), so replaying the
same events gives byte-identical output. The executor's Faust agent is a thin shell:
decode, load, `advance`, store, produce.

The input execution is never mutated: the result is a copy (copy-on-write of the lists
and task runs a step touches). An event that changes nothing returns the very same
execution object and no commands, so callers can skip the table write with `is`.

First subset of the flow language: the tasks run in sequence, then the `errors` branch
when one failed, then the `finally` branch (the order is in `branches`); retries with
constant or exponential backoff (`maxAttempts`, `maxDuration`, `maxInterval`); task
timeouts. This module reads events; `transition.Transition` holds the moves they share.

Events published per step: one `ExecutionEvent` per changed entity (the execution, or
one task run), holding its state after the step; its `histories` carry every state it
went through, so coalescing CREATED -> RUNNING into one event loses nothing and halves
the messages per task run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from headrace import messages
from headrace.core.events import Event, Start, TaskFinished, TimerFired
from headrace.core.retries import format_duration
from headrace.core.state import Attempt, Execution, TimerKind
from headrace.core.transition import TIMEOUT_GRACE, Step, Transition
from headrace.flow.model import Flow
from headrace.messages import CommandKind, StateChange
from headrace.states import State

__all__ = ["TIMEOUT_GRACE", "Step", "advance"]


def advance(execution: Execution | None, event: Event, flow: Flow, now: datetime) -> Step:
    """Apply `event` to `execution` (None before its `Start`) of `flow`, at time `now`."""
    match event:
        case Start(trigger=trigger):
            if execution is not None:  # a redelivered trigger
                return Step(execution, [])
            return _start(trigger, flow, now)
        case TaskFinished(result=result):
            if execution is None or execution.state.is_terminal:
                return Step(execution, [])
            return _task_finished(execution, result, flow, now)
        case TimerFired(command=command):
            if execution is None or execution.state.is_terminal:
                return Step(execution, [])
            return _timer_fired(execution, command, flow, now)
    raise TypeError(f"not a core event: {event!r}")


def _start(trigger: messages.TriggerEvent, flow: Flow, now: datetime) -> Step:
    execution = Execution(
        id=trigger.execution_id,
        namespace=trigger.namespace,
        flow_id=trigger.flow_id,
        flow_revision=trigger.flow_revision,
        inputs=trigger.inputs,
        labels={**flow.labels, **trigger.labels},  # the trigger's own labels win
        trigger=trigger.trigger,
        state=State.CREATED,
        histories=[StateChange(State.CREATED, now)],
        task_runs=[],
        outputs={},
        seq=0,
        timers=[],
        created_at=now,
    )
    step = Transition(execution, flow, now, fresh=True)
    step.set_execution_state(State.RUNNING)
    step.start_task(0)
    return step.finish()


def _task_finished(
    execution: Execution, result: messages.TaskResult, flow: Flow, now: datetime
) -> Step:
    index = _find_task_run(execution, result.task_run_id)
    if index is None or not result.state.is_terminal:
        return Step(execution, [])
    task_run = execution.task_runs[index]
    current = task_run.attempts[-1] if task_run.attempts else None
    if (
        task_run.state is not State.RUNNING
        or current is None
        or current.number != result.attempt
        or current.state is not State.RUNNING
    ):
        return Step(execution, [])  # a duplicate, or a result for an attempt we gave up on

    step = Transition(execution, flow, now)
    step.remove_timer(TimerKind.TIMEOUT, task_run.id, result.attempt)
    writable = step.task_run(index)
    writable.attempts[-1] = Attempt(
        result.attempt, result.state, result.started_at, result.ended_at, result.error
    )
    if result.state in (State.SUCCESS, State.WARNING):
        writable.outputs = result.outputs
        step.set_task_run_state(index, result.state)
        step.task_run_ended(index)
    else:
        step.attempt_failed(index, result.error or f"attempt ended {result.state}")
    return step.finish()


def _timer_fired(
    execution: Execution, command: messages.ExecutionCommand, flow: Flow, now: datetime
) -> Step:
    if command.kind != CommandKind.TIMER:
        return Step(execution, [])
    kind = command.payload.get("timer")
    timer = next(
        (
            timer
            for timer in execution.timers
            if timer.kind == kind
            and timer.task_run_id == command.task_run_id
            and timer.attempt == command.attempt
        ),
        None,
    )
    index = _find_task_run(execution, command.task_run_id or "")
    if timer is None or index is None:
        return Step(execution, [])  # fired twice, or no longer wanted

    step = Transition(execution, flow, now)
    step.remove_timer(timer.kind, timer.task_run_id, timer.attempt)
    task_run = execution.task_runs[index]
    current = task_run.attempts[-1]
    if timer.kind is TimerKind.RETRY:
        if task_run.state is State.RETRYING and current.number == timer.attempt - 1:
            step.request_attempt(index, timer.attempt)
    elif (
        task_run.state is State.RUNNING
        and current.number == timer.attempt
        and current.state is State.RUNNING
    ):
        timeout = step.task_of(index).timeout or timedelta(0)
        error = (
            f"timed out: no result within {format_duration(timeout)}"
            f" (+{format_duration(TIMEOUT_GRACE)} grace)"
        )
        step.task_run(index).attempts[-1] = Attempt(
            current.number, State.FAILED, current.started_at, now, error
        )
        step.attempt_failed(index, error)
    return step.finish()


def _find_task_run(execution: Execution, task_run_id: str) -> int | None:
    # From the end: in a sequential flow the run an event is about is always the last.
    for index in range(len(execution.task_runs) - 1, -1, -1):
        if execution.task_runs[index].id == task_run_id:
            return index
    return None
