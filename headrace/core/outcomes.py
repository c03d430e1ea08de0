"""What an operator's command did, and whether an execution can still progress.

Every kill, resume, restart, replay and probe is answered on `executions` with a
`CommandOutcome`: the gateway tells the caller whether the command took effect (or why
not), and the watchdog learns from a probe whether an execution is stuck. Pure: the
states before and after a step decide; the executor shell answers for executions it does
not know at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from headrace import messages
from headrace.core import tree
from headrace.core.events import PublishEvent
from headrace.core.state import Execution
from headrace.core.transition import Step, Transition
from headrace.flow import flowables as f
from headrace.messages import CommandKind, CommandOutcome, CommandStatus
from headrace.states import State

# A timer this late means the executor's timer loop is not firing it: an executor fires
# timers within milliseconds, and rebuilds them at once after a restart.
TIMER_OVERDUE = timedelta(minutes=5)


def answer(
    command: messages.ExecutionCommand, before: Execution, step: Step, now: datetime
) -> Step:
    """`step` with the outcome of `command` appended: APPLIED when it changed the
    execution (or, for a replay, started the new one), else IGNORED saying why."""
    after = step.execution
    assert after is not None  # commands never delete an execution
    if command.kind is CommandKind.REPLAY:
        applied = bool(step.commands)
    else:
        applied = after.state != before.state or after.seq != before.seq
    outcome = CommandOutcome(
        command_id=command.command_id,
        kind=command.kind,
        status=CommandStatus.APPLIED if applied else CommandStatus.IGNORED,
        reason=None if applied else step.refusal or ignored_because(command, before),
        state=after.state,
    )
    return Step(after, [*step.commands, _publish(after, outcome, now)])


def ignored_because(command: messages.ExecutionCommand, execution: Execution) -> str:
    state = execution.state
    match command.kind:
        case CommandKind.KILL if state is State.KILLING:
            return "the execution is already being killed"
        case CommandKind.KILL:
            return f"the execution already ended {state}"
        case CommandKind.RESUME if state is not State.PAUSED:
            return f"the execution is {state}, not PAUSED"
        case CommandKind.RESUME:
            return f"no paused task run {command.task_run_id} in this execution"
        case CommandKind.RESTART:
            return f"the execution is {state}: only FAILED or KILLED executions restart"
        case CommandKind.REPLAY if not state.is_terminal:
            return f"the execution is {state}: only ended executions are replayed"
        case CommandKind.REPLAY:
            return f"no task run {command.payload.get('taskRunId')} in this execution"
    return f"{command.kind} does not apply to an execution {state}"


def probe(command: messages.ExecutionCommand, step: Transition) -> Step:
    """The watchdog's probe: whether the execution can progress, as a PROBE outcome.

    If the index shows another state than the executor holds (`payload.indexState`), the
    execution's snapshot is published again, so the index catches up (an event lost on
    its way, say)."""
    execution = step.execution
    index_state = command.payload.get("indexState")
    if isinstance(index_state, str) and index_state != execution.state:
        step.changed_execution()
    reason = stuck_reason(step)
    finished = step.finish()
    outcome = CommandOutcome(
        command_id=command.command_id,
        kind=command.kind,
        status=CommandStatus.APPLIED,
        reason=reason,
        state=execution.state,
    )
    assert finished.execution is not None
    return Step(finished.execution, [*finished.commands, _publish(execution, outcome, step.now)])


def stuck_reason(step: Transition) -> str | None:
    """Why nothing can move this execution any more, or None when something will: a
    running attempt's result, a subflow's child, a timer, a resume, a concurrency slot."""
    execution = step.execution
    state = execution.state
    if state.is_terminal or state is State.QUEUED:
        return None
    if execution.timers:
        due = min(timer.due for timer in execution.timers)
        if due < step.now - TIMER_OVERDUE:
            return f"{state}, waiting for a timer due at {due.isoformat()} that never fired"
        return None
    runs = execution.task_runs
    if state is State.PAUSED:
        if any(run.state is State.PAUSED for run in runs):
            return None
        return "PAUSED, but none of its task runs is paused: a resume has nothing to resume"
    for index, run in enumerate(runs):
        if run.state is State.PAUSED:
            return None  # a resume moves it
        if run.state is not State.RUNNING or tree.is_container_run(step, index):
            continue  # containers move when their children do
        current = run.attempts[-1] if run.attempts else None
        waits_for_worker = current is not None and not current.state.is_terminal
        if waits_for_worker or step.task_of(index).type == f.SUBFLOW:
            return None
    return (
        f"{state}, but no task run is running, paused or waiting for a retry, and no timer "
        "or subflow is pending: nothing can move it"
    )


def _publish(execution: Execution, outcome: CommandOutcome, now: datetime) -> PublishEvent:
    return PublishEvent(messages.ExecutionEvent(execution.id, execution.seq, now, command=outcome))
