"""Batched, idempotent writes of the `executions` and `logs` topics (the indexer's SQL).

One call writes one consumer batch in one transaction. Each table gets one
`INSERT … SELECT FROM unnest(…)`: one statement per table, whose RETURNING gives the
executions that just ended. Measured on par with executemany (25-40k rows/s for both on
a busy 2-core box, `python benchmarks/indexer.py`). Executions and task runs
are upserted only when the event's `seq` is above the stored `last_seq`, so replays and
reordering never move a row backwards; within a batch only the highest seq per row is
kept (an upsert may not touch a row twice). Logs are inserted once per id.

Executions that reached a terminal state in the batch are announced with
`NOTIFY headrace_executions, '<id>'`, and every execution the batch changed (a state, a
task run, a log line) with `NOTIFY headrace_changes, '<id>,<id>,…'` (what live followers
of an execution's logs and states wait on), both delivered when the transaction commits.

PostgreSQL stores no NUL in text (`\x00`) nor in jsonb (`\u0000`): every text value and
every JSON document is written with NUL replaced by U+FFFD, so a task output holding
one cannot stop the index. A row PostgreSQL still refuses (`DATA_ERRORS`) is set apart
by `write_each`, which writes a batch message by message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from headrace.db.pool import dumps
from headrace.messages import (
    AttemptSnapshot,
    CommandKind,
    CommandStatus,
    ExecutionEvent,
    LogRecord,
    StateChange,
    TaskRunSnapshot,
)
from headrace.states import TERMINAL_STATES, State

NOTIFY_CHANNEL = "headrace_executions"
CHANGES_CHANNEL = "headrace_changes"
# PostgreSQL refuses a notice payload of 8000 bytes or more.
MAX_NOTICE_BYTES = 7_900

_TERMINAL = [str(s) for s in TERMINAL_STATES]

# What PostgreSQL answers for a value it cannot store (class 22 data exceptions, class
# 23 constraints, 54 limits such as an index row too big), and orjson for JSON it cannot
# write (nested deeper than it reads): the row's fault, not the server's, so retrying
# the same batch would fail forever.
DATA_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    orjson.JSONEncodeError,
)

REPLACEMENT = "\ufffd"
# `\u0000` in orjson's output, unless its backslash is itself escaped (`\\u0000` is the
# six characters of a string that merely mentions it).
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")

_UPSERT_EXECUTIONS = """
INSERT INTO executions AS e (id, namespace, flow_id, flow_revision, state, histories, inputs,
    outputs, labels, trigger, created_at, updated_at, start_date, end_date, last_seq)
SELECT u.id, u.namespace, u.flow_id, u.flow_revision, u.state, u.histories::jsonb,
    u.inputs::jsonb, u.outputs::jsonb, u.labels::jsonb, u.trigger::jsonb, u.created_at,
    u.updated_at, u.start_date, u.end_date, u.last_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[],
    $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
    $13::timestamptz[], $14::timestamptz[], $15::bigint[])
    AS u(id, namespace, flow_id, flow_revision, state, histories, inputs, outputs, labels,
         trigger, created_at, updated_at, start_date, end_date, last_seq)
ON CONFLICT (id) DO UPDATE SET
    namespace = EXCLUDED.namespace, flow_id = EXCLUDED.flow_id,
    flow_revision = EXCLUDED.flow_revision, state = EXCLUDED.state,
    histories = EXCLUDED.histories, inputs = EXCLUDED.inputs, outputs = EXCLUDED.outputs,
    labels = EXCLUDED.labels, trigger = EXCLUDED.trigger,
    created_at = LEAST(e.created_at, EXCLUDED.created_at), updated_at = EXCLUDED.updated_at,
    start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
    last_seq = EXCLUDED.last_seq, stuck_reason = NULL, next_probe_at = NULL
WHERE e.last_seq < EXCLUDED.last_seq
RETURNING e.id, e.state
"""

_INSERT_COMMANDS = """
INSERT INTO execution_commands (id, execution_id, kind, status, reason, state, answered_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::timestamptz[])
ON CONFLICT (id) DO NOTHING
"""

# A probe's finding: the reason is kept only while the index still shows the execution
# unended (a change that came meanwhile says it moved).
_RECORD_PROBES = """
UPDATE executions AS e SET checked_at = u.checked_at,
    stuck_reason = CASE WHEN e.state = ANY($5::text[]) THEN NULL ELSE u.reason END
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[])
    AS u(id, reason, checked_at, seq)
WHERE e.id = u.id AND (u.seq = 0 OR e.last_seq <= u.seq)
"""

# Task runs changed: their execution changed too (a probe must wait until it is quiet
# again, and what it found no longer holds).
_TOUCH_EXECUTIONS = """
UPDATE executions AS e SET updated_at = GREATEST(e.updated_at, u.time), stuck_reason = NULL,
    next_probe_at = NULL
FROM unnest($1::text[], $2::timestamptz[]) AS u(id, time)
WHERE e.id = u.id
"""

# A kill of an execution the executor holds no state for (lost): nothing will ever end it
# but the index, which records it KILLED with its unended task runs. A start that comes
# after all is killed by the executor, which remembers the kill.
_CLOSE_LOST = """
WITH closed AS (
    UPDATE executions SET state = 'KILLED', end_date = $2, updated_at = $2,
        histories = histories || jsonb_build_array(
            jsonb_build_object('state', 'KILLED', 'date', to_jsonb($2::timestamptz))),
        stuck_reason = NULL, next_probe_at = NULL
    WHERE id = ANY($1::text[]) AND NOT (state = ANY($3::text[]))
    RETURNING id)
UPDATE task_runs SET state = 'KILLED', end_date = $2
FROM closed WHERE task_runs.execution_id = closed.id AND NOT (task_runs.state = ANY($3::text[]))
"""

_UPSERT_TASK_RUNS = """
INSERT INTO task_runs AS t (id, execution_id, task_id, parent_task_run_id, value, state,
    histories, attempts, outputs, created_at, start_date, end_date, first_seq, first_index,
    last_seq)
SELECT u.id, u.execution_id, u.task_id, u.parent_task_run_id, u.value, u.state,
    u.histories::jsonb, u.attempts::jsonb, u.outputs::jsonb, u.created_at, u.start_date,
    u.end_date, u.first_seq, u.first_index, u.last_seq
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
    $12::timestamptz[], $13::bigint[], $14::bigint[], $15::integer[])
    AS u(id, execution_id, task_id, parent_task_run_id, value, state, histories, attempts,
         outputs, created_at, start_date, end_date, last_seq, first_seq, first_index)
ON CONFLICT (id) DO UPDATE SET
    task_id = EXCLUDED.task_id, parent_task_run_id = EXCLUDED.parent_task_run_id,
    value = EXCLUDED.value, state = EXCLUDED.state, histories = EXCLUDED.histories,
    attempts = EXCLUDED.attempts, outputs = EXCLUDED.outputs,
    created_at = LEAST(t.created_at, EXCLUDED.created_at),
    start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
    first_seq = LEAST(t.first_seq, EXCLUDED.first_seq),
    first_index = CASE WHEN EXCLUDED.first_seq < t.first_seq
        THEN EXCLUDED.first_index ELSE t.first_index END,
    last_seq = EXCLUDED.last_seq
WHERE t.last_seq < EXCLUDED.last_seq
"""

_INSERT_LOGS = """
INSERT INTO logs (id, execution_id, namespace, flow_id, task_run_id, task_id, attempt, time,
    level, message)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
    $7::int[], $8::timestamptz[], $9::text[], $10::text[])
ON CONFLICT (id) DO NOTHING
"""


def _json(value: Any) -> str:
    data = dumps(value)
    if b"\\u0000" in data:  # rare: skip the regex otherwise
        data = _JSON_NUL.sub(rb"\1\\ufffd", data)
    return data.decode()


def _text(value: str | None) -> str | None:
    return value if value is None or "\x00" not in value else value.replace("\x00", REPLACEMENT)


def _histories(histories: list[StateChange]) -> str:
    return _json([{"state": str(h.state), "date": h.date} for h in histories])


def _attempts(attempts: list[AttemptSnapshot]) -> str:
    return _json(
        [
            {
                "state": {
                    "current": str(a.state),
                    "startDate": a.started_at,
                    "endDate": a.ended_at,
                },
                "error": a.error,
            }
            for a in attempts
        ]
    )


def _span(histories: list[StateChange], state: State) -> tuple[datetime | None, datetime | None]:
    """Start and end dates as Kestra reports them: first change, and last if terminal."""
    if not histories:
        return None, None
    end = histories[-1].date if state in TERMINAL_STATES else None
    return histories[0].date, end


@dataclass(frozen=True, slots=True)
class _RunRow:
    """A task run's row from one batch: its latest event, and the lowest seq (with the
    run's index then) the batch showed it at, which orders it among its siblings."""

    event: ExecutionEvent
    run: TaskRunSnapshot
    first_seq: int
    first_index: int


def latest_per_row(
    events: Iterable[ExecutionEvent],
) -> tuple[dict[str, ExecutionEvent], dict[str, _RunRow]]:
    """Highest-seq event per execution, and per task run."""
    executions: dict[str, ExecutionEvent] = {}
    task_runs: dict[str, _RunRow] = {}
    for event in events:
        if event.execution is not None:
            seen = executions.get(event.execution_id)
            if seen is None or seen.seq < event.seq:
                executions[event.execution_id] = event
        for run in event.task_runs:
            found = task_runs.get(run.id)
            if found is None:
                task_runs[run.id] = _RunRow(event, run, event.seq, run.index)
                continue
            first = (found.first_seq, found.first_index)
            if event.seq < found.first_seq:
                first = (event.seq, run.index)
            latest = (event, run) if found.event.seq < event.seq else (found.event, found.run)
            task_runs[run.id] = _RunRow(*latest, *first)
    return executions, task_runs


async def write_batch(
    conn: asyncpg.Connection, events: Iterable[ExecutionEvent], logs: Iterable[LogRecord]
) -> list[str]:
    """Write one batch in one transaction; returns the ids of executions now terminal."""
    events = list(events)
    executions, task_runs = latest_per_row(events)
    answers = [e for e in events if e.command is not None]
    unique_logs = {record.id: record for record in logs}
    finished: list[str] = []
    async with conn.transaction():
        if executions:
            finished = await _upsert_executions(conn, list(executions.values()))
        if task_runs:
            await _upsert_task_runs(conn, list(task_runs.values()))
            await _touch_executions(conn, [row.event for row in task_runs.values()])
        if unique_logs:
            await _insert_logs(conn, list(unique_logs.values()))
        answered = await _record_answers(conn, answers) if answers else []
        # Wakes who waits for these executions' end, or for a command's answer; and who
        # follows any execution the batch changed. One statement for both.
        woken = list(dict.fromkeys([*finished, *answered]))
        changed = list(
            dict.fromkeys(
                [*executions, *(row.event.execution_id for row in task_runs.values())]
                + [record.execution_id for record in unique_logs.values()]
            )
        )
        if woken or changed:
            notices = [(NOTIFY_CHANNEL, _text(i)) for i in woken]
            notices += [(CHANGES_CHANNEL, ids) for ids in id_lists(changed)]
            await conn.execute(
                "SELECT pg_notify(channel, payload) FROM unnest($1::text[], $2::text[])"
                " AS notice(channel, payload)",
                [channel for channel, _ in notices],
                [payload for _, payload in notices],
            )
    return finished


def id_lists(ids: list[str]) -> list[str]:
    """`ids` as comma-separated lists that fit a notice's payload: a batch changing a
    thousand executions sends three notices, not a thousand (each costs the commit)."""
    lists: list[str] = []
    current: list[str] = []
    size = 0
    for execution_id in ids:
        length = len(execution_id.encode()) + 1  # PostgreSQL counts bytes
        if current and size + length > MAX_NOTICE_BYTES:
            lists.append(",".join(current))
            current, size = [], 0
        current.append(execution_id)
        size += length
    if current:
        lists.append(",".join(current))
    return lists


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message PostgreSQL would not store, and why."""

    message: ExecutionEvent | LogRecord
    error: Exception


async def write_each(
    conn: asyncpg.Connection, events: Iterable[ExecutionEvent], logs: Iterable[LogRecord]
) -> tuple[list[str], list[Rejected]]:
    """Write message by message, each in its own transaction, after a batch hit one of
    `DATA_ERRORS`: the good rows are stored, the refused ones returned, not raised.

    Returns the executions now terminal and the rejected messages. Slow (one transaction
    per message), so only for a batch that failed.
    """
    finished: list[str] = []
    rejected: list[Rejected] = []
    for part in (part for event in events for part in _one_row_each(event)):
        try:
            finished += await write_batch(conn, [part], [])
        except DATA_ERRORS as exc:
            rejected.append(Rejected(part, exc))
    for record in logs:
        try:
            await write_batch(conn, [], [record])
        except DATA_ERRORS as exc:
            rejected.append(Rejected(record, exc))
    return finished, rejected


def _one_row_each(event: ExecutionEvent) -> list[ExecutionEvent]:
    """`event` as events of one row each: the task runs, then the execution's snapshot
    (a step's event holds several; one refused row must not take the others with it)."""
    if len(event.task_runs) + (event.execution is not None) < 2:
        return [event]
    parts = [
        replace(event, execution=None, task_runs=[run], command=None) for run in event.task_runs
    ]
    if event.execution is not None:
        parts.append(replace(event, task_runs=[]))
    return parts


async def _upsert_executions(conn: asyncpg.Connection, events: list[ExecutionEvent]) -> list[str]:
    columns: list[list[Any]] = [[] for _ in range(15)]
    for event in events:
        snap = event.execution
        assert snap is not None
        start, end = _span(snap.histories, snap.state)
        created = snap.histories[0].date if snap.histories else event.time
        row = (
            _text(event.execution_id),
            _text(snap.namespace),
            _text(snap.flow_id),
            snap.flow_revision,
            str(snap.state),
            _histories(snap.histories),
            _json(snap.inputs),
            _json(snap.outputs),
            _json(snap.labels),
            _json(snap.trigger),
            created,
            event.time,
            start,
            end,
            event.seq,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    rows = await conn.fetch(_UPSERT_EXECUTIONS, *columns)
    return [r["id"] for r in rows if r["state"] in _TERMINAL]


async def _upsert_task_runs(conn: asyncpg.Connection, rows: list[_RunRow]) -> None:
    columns: list[list[Any]] = [[] for _ in range(15)]
    for found in rows:
        event, run = found.event, found.run
        start, end = _span(run.histories, run.state)
        row = (
            _text(run.id),
            _text(event.execution_id),
            _text(run.task_id),
            _text(run.parent_task_run_id),
            _text(run.value),
            str(run.state),
            _histories(run.histories),
            _attempts(run.attempts),
            _json(run.outputs),
            run.histories[0].date if run.histories else event.time,
            start,
            end,
            event.seq,
            found.first_seq,
            found.first_index,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_UPSERT_TASK_RUNS, *columns)


async def _touch_executions(conn: asyncpg.Connection, events: Iterable[ExecutionEvent]) -> None:
    latest: dict[str, datetime] = {}
    for event in events:
        seen = latest.get(event.execution_id)
        if seen is None or seen < event.time:
            latest[event.execution_id] = event.time
    await conn.execute(_TOUCH_EXECUTIONS, [_text(i) for i in latest], list(latest.values()))


async def _record_answers(conn: asyncpg.Connection, events: list[ExecutionEvent]) -> list[str]:
    """Store operators' command outcomes and the watchdog's findings; returns the
    executions whose commands were answered."""
    commands: list[list[Any]] = [[] for _ in range(7)]
    probes: list[list[Any]] = [[] for _ in range(4)]
    lost_killed: list[str] = []
    for event in events:
        outcome = event.command
        assert outcome is not None
        if outcome.kind == CommandKind.PROBE:
            stuck = outcome.reason
            if outcome.status is CommandStatus.UNKNOWN:
                stuck = f"lost: {outcome.reason}"
            found = (_text(event.execution_id), _text(stuck), event.time, event.seq)
            for column, value in zip(probes, found, strict=True):
                column.append(value)
            continue
        if outcome.kind == CommandKind.KILL and outcome.status is CommandStatus.UNKNOWN:
            lost_killed.append(_text(event.execution_id))
        row = (
            _text(outcome.command_id),
            _text(event.execution_id),
            str(outcome.kind),
            str(outcome.status),
            _text(outcome.reason),
            None if outcome.state is None else str(outcome.state),
            event.time,
        )
        for column, value in zip(commands, row, strict=True):
            column.append(value)
    if commands[0]:
        await conn.execute(_INSERT_COMMANDS, *commands)
    if probes[0]:
        await conn.execute(_RECORD_PROBES, *probes, _TERMINAL)
    if lost_killed:
        time = max(e.time for e in events)
        await conn.execute(_CLOSE_LOST, lost_killed, time, _TERMINAL)
    return commands[1]


async def _insert_logs(conn: asyncpg.Connection, records: list[LogRecord]) -> None:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for r in records:
        row = (
            _text(r.id),
            _text(r.execution_id),
            _text(r.namespace),
            _text(r.flow_id),
            _text(r.task_run_id),
            _text(r.task_id),
            r.attempt,
            r.time,
            str(r.level),
            _text(r.message),
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    await conn.execute(_INSERT_LOGS, *columns)
