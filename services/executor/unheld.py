"""What the executor says about a message it cannot apply: one for an execution it holds
no state for (never, or no longer: evicted), or one whose flow revision no longer loads.

Such a message is never dropped silently: the execution's log gets an ERROR line (the
logs API and `headrace logs` show it; not for the watchdog's probes, whose finding the
API shows), and a kill, resume, restart, replay or probe is answered on `executions`, so
the gateway tells its caller and the watchdog reports the execution. Normally no such
message exists: the executor's table holds every execution it started, and a stored
flow revision loads. One arrives when a state was lost, for an id no execution ever had,
or for a revision stored under rules since tightened.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from headrace.core.state import Execution
from headrace.messages import (
    ANSWERED_COMMANDS,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    ExecutionCommand,
    ExecutionEvent,
    LogLevel,
    LogRecord,
    Message,
    TaskResult,
)
from headrace.services.executor.eviction import Tombstone
from headrace.topics import EXECUTIONS, LOGS

NOT_HELD = "the executor holds no state for this execution"
KILL_REMEMBERED = f"{NOT_HELD} (yet): if it starts after all, it is killed as soon as it does"


def not_held(message: Message, now: datetime) -> list[tuple[str, Message]]:
    """(topic, message) pairs to publish about `message`; empty for a message that needs
    no word (a task's start report: its result will get one)."""
    if isinstance(message, TaskResult):
        if not message.state.is_terminal:
            return []
        what = (
            f"the {message.state} result of task run {message.task_run_id} attempt "
            f"{message.attempt} (worker {message.worker_id or '?'})"
        )
        return [
            (LOGS.name, _log_line(message.execution_id, f"{what} was dropped: {NOT_HELD}", now))
        ]
    if not isinstance(message, ExecutionCommand):
        return []
    reason = KILL_REMEMBERED if message.kind is CommandKind.KILL else NOT_HELD
    records: list[tuple[str, Message]] = []
    if message.kind is not CommandKind.PROBE:  # asked again and again: the API shows it
        line = f"{message.kind} command {message.command_id} was not applied: {reason}"
        records.append((LOGS.name, _log_line(message.execution_id, line, now)))
    if message.kind in ANSWERED_COMMANDS:
        outcome = CommandOutcome(message.command_id, message.kind, CommandStatus.UNKNOWN, reason)
        event = ExecutionEvent(message.execution_id, 0, now, command=outcome)
        records.append((EXECUTIONS.name, event))
    return records


def evicted(message: Message, tombstone: Tombstone, now: datetime) -> list[tuple[str, Message]]:
    """(topic, message) pairs to publish about `message`, for an evicted execution: none
    for a start or result delivered again (ignored, as the state would have ignored it);
    for an operator's command, its answer: IGNORED, saying why."""
    if not (isinstance(message, ExecutionCommand) and message.kind in ANSWERED_COMMANDS):
        return []
    reason = tombstone.reason()
    outcome = CommandOutcome(
        message.command_id, message.kind, CommandStatus.IGNORED, reason, tombstone.state
    )
    return [
        (EXECUTIONS.name, ExecutionEvent(message.execution_id, tombstone.seq, now, command=outcome))
    ]


def flow_unloadable(
    message: Message, execution: Execution | None, error: Exception, now: datetime
) -> list[tuple[str, Message]]:
    """(topic, message) pairs to publish about `message`, which cannot be applied because
    its execution's flow revision does not load (`error` says why)."""
    reason = f"its flow revision does not load: {error}"
    command = message if isinstance(message, ExecutionCommand) else None
    records: list[tuple[str, Message]] = []
    if command is None or command.kind is not CommandKind.PROBE:
        what = getattr(message, "kind", None) or type(message).__name__
        line = f"{what} was not applied: {reason}"
        records.append((LOGS.name, _log_line(message.execution_id, line, now)))
    if command is not None and command.kind in ANSWERED_COMMANDS:
        probe = command.kind is CommandKind.PROBE
        outcome = CommandOutcome(
            command.command_id,
            command.kind,
            # A probe: held, but nothing can move it; a command: not applied, saying why.
            CommandStatus.APPLIED if probe else CommandStatus.IGNORED,
            f"{reason}: nothing can move it" if probe else reason,
            None if execution is None else execution.state,
        )
        seq = 0 if execution is None else execution.seq
        event = ExecutionEvent(command.execution_id, seq, now, command=outcome)
        records.append((EXECUTIONS.name, event))
    return records


def _log_line(execution_id: str, message: str, now: datetime) -> LogRecord:
    return LogRecord(
        # One per line and moment: a replayed batch logs again (rare, and harmless).
        id=f"{execution_id}:not-held:{now.timestamp():.6f}:{_digest(message)}",
        execution_id=execution_id,
        namespace="",
        flow_id="",
        time=now,
        level=LogLevel.ERROR,
        message=message,
    )


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
