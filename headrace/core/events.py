"""What goes into the core (events) and what comes out (commands).

Events wrap the decoded Kafka messages the executor consumes; commands wrap the messages
it must produce, plus `SetTimer`, which the executor's timer queue turns into a
`TimerFired` event when due. The core never performs a command itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from headrace import messages
from headrace.core.state import Timer


@dataclass(slots=True)
class Start:
    """A trigger asks for a new execution (duplicates of it are ignored)."""

    trigger: messages.TriggerEvent


@dataclass(slots=True)
class TaskFinished:
    """A worker reports on one run of one attempt: that it started (`result.state`
    RUNNING, before the task runs), or its outcome."""

    result: messages.TaskResult


@dataclass(slots=True)
class TimerFired:
    """A timer set by `SetTimer` came due: kind TIMER, payload {"timer": TimerKind}."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Kill:
    """Kill the execution: running attempts are cancelled, nothing new starts."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Resume:
    """Resume paused task runs (all, or `command.task_run_id`); payload {"inputs": {...}}."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Restart:
    """Run the failed (or killed) task runs of an ended execution again."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Replay:
    """Start a new execution from a task run of this one.

    Payload {"newExecutionId", "taskRunId"}; this execution itself does not change.
    """

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Probe:
    """The watchdog asks whether the execution can still progress; payload {"indexState":
    the state the index shows}. Changes nothing but a stale index (see `outcomes.probe`)."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class ChildEnded:
    """A subflow's execution ended; payload {"childExecutionId", "state", "outputs"}."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class SlotGranted:
    """The flow's concurrency slot is this QUEUED execution's: it may run now."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class SlotDenied:
    """The flow's concurrency limit is reached; payload {"behavior": "CANCEL"|"FAIL"}."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class Abort:
    """The executor could not apply an event to this execution (a bug, an expression that
    exhausted the stack or memory): end it FAILED saying why, instead of retrying the
    event forever. `trigger`: the event was its `Start`, so there is no execution yet."""

    reason: str
    trigger: messages.TriggerEvent | None = None


Event = (
    Start
    | TaskFinished
    | TimerFired
    | Kill
    | Resume
    | Restart
    | Replay
    | Probe
    | ChildEnded
    | SlotGranted
    | SlotDenied
    | Abort
)

_COMMAND_EVENTS: dict[messages.CommandKind, type] = {
    messages.CommandKind.TIMER: TimerFired,
    messages.CommandKind.KILL: Kill,
    messages.CommandKind.RESUME: Resume,
    messages.CommandKind.RESTART: Restart,
    messages.CommandKind.REPLAY: Replay,
    messages.CommandKind.PROBE: Probe,
    messages.CommandKind.CHILD_ENDED: ChildEnded,
    messages.CommandKind.SLOT_GRANTED: SlotGranted,
    messages.CommandKind.SLOT_DENIED: SlotDenied,
}


def command_event(command: messages.ExecutionCommand) -> Event:
    """The core event for an `ExecutionCommand` consumed from `execution-commands`."""
    return _COMMAND_EVENTS[command.kind](command)


@dataclass(slots=True)
class RequestTask:
    """Produce to `task-requests`: a worker should run this attempt."""

    request: messages.TaskRequest


@dataclass(slots=True)
class PublishEvent:
    """Produce to `executions`: the execution or one task run changed."""

    event: messages.ExecutionEvent


@dataclass(slots=True)
class EmitLog:
    """Produce to `logs`: a line written by the executor itself (retries, failures)."""

    record: messages.LogRecord


@dataclass(slots=True)
class SetTimer:
    """Fire a `TimerFired` for this execution at `timer.due`; must survive restarts.

    The timer is also kept in `Execution.timers`, so the executor can rebuild its timer
    index from its table after a restart.
    """

    execution_id: str
    timer: Timer


@dataclass(slots=True)
class KillTask:
    """Cancel this attempt wherever a worker runs it (its result then arrives KILLED);
    with `run_id`, only that run of it."""

    execution_id: str
    task_run_id: str
    attempt: int
    run_id: str = ""


@dataclass(slots=True)
class SendCommand:
    """Produce to `execution-commands`: act on another execution (a subflow's parent or child)."""

    command: messages.ExecutionCommand


@dataclass(slots=True)
class StartExecution:
    """Produce to `triggers`: start another execution (a subflow's child, a replay).

    `flow_revision` 0 means the latest revision: the executor shell resolves it.
    """

    trigger: messages.TriggerEvent


@dataclass(slots=True)
class RequestSlot:
    """Produce to `flow-slots` (key `request.flow_key`): ask for or give back a flow's slot.

    The slot agent answers an ACQUIRE with an `ExecutionCommand` SLOT_GRANTED or
    SLOT_DENIED to `request.execution_id`; a RELEASE gets no answer.
    """

    request: messages.SlotRequest


Command = (
    RequestTask
    | PublishEvent
    | EmitLog
    | SetTimer
    | KillTask
    | SendCommand
    | StartExecution
    | RequestSlot
)
