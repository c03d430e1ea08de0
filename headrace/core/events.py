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
    """A worker reports the outcome of one attempt."""

    result: messages.TaskResult


@dataclass(slots=True)
class TimerFired:
    """A timer set by `SetTimer` came due: kind TIMER, payload {"timer": TimerKind}."""

    command: messages.ExecutionCommand


Event = Start | TaskFinished | TimerFired


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


Command = RequestTask | PublishEvent | EmitLog | SetTimer
