"""What the executor says about a message for an execution it holds no state for.

Such a message cannot be applied, and is never dropped silently: the execution's log gets
an ERROR line (the logs API and `headrace logs` show it), and a kill, resume, restart,
replay or probe is answered UNKNOWN on `executions`, so the gateway tells its caller and
the watchdog reports the execution. Normally no such message exists: the executor's
table holds every execution it started. One arrives when a state was lost, or for an id
no execution ever had.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

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
    answered = message.kind in ANSWERED_COMMANDS
    reason = KILL_REMEMBERED if message.kind is CommandKind.KILL else NOT_HELD
    line = f"{message.kind} command {message.command_id} was not applied: {reason}"
    if message.kind is CommandKind.PROBE:
        line = f"the watchdog's probe found that {NOT_HELD}: it cannot progress"
    records: list[tuple[str, Message]] = [(LOGS.name, _log_line(message.execution_id, line, now))]
    if answered:
        outcome = CommandOutcome(message.command_id, message.kind, CommandStatus.UNKNOWN, reason)
        event = ExecutionEvent(message.execution_id, 0, now, command=outcome)
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
