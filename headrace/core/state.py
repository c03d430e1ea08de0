"""An execution's whole state, as the executor keeps it in its table.

`Execution` holds what the core needs to decide the next step: the task runs with their
attempts, the pending timers and the event sequence number. `to_bytes` is compact on
purpose (positional orjson arrays, states as small ints, times as epoch microseconds):
a million idle executions must fit in one RocksDB-backed table. The wire and API shapes
(`messages.ExecutionSnapshot`, `messages.TaskRunSnapshot`) are built by `snapshot()`.

A state is one record (`to_bytes`), or a header and its task runs apart
(`header_bytes` and `encode_task_run`): the header then holds their count in their place,
and the executor stores each task run under a key of its own (services/executor/stored.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson

from headrace import messages
from headrace.errors import HeadraceError
from headrace.messages import StateChange
from headrace.states import State

# 2: task runs carry `iteration` and `data`; 3: `applied` command ids; 4: a running
# attempt may carry its run id and worker id; 5: a header whose task runs are stored
# apart. A whole state is still written as 4: an executor of the previous release reads
# every execution but those big enough to be split (it stops on those, as on any newer
# format, instead of dropping their events).
FORMAT_VERSION = 4
HEADER_FORMAT_VERSION = 5
_READABLE_VERSIONS = (2, 3, 4, 5)  # 2 decodes with no applied commands

MAX_APPLIED_COMMANDS = 256
"""Command ids an execution remembers to ignore redeliveries. Operator commands (kill,
resume, restart) are rare: 256 covers any realistic redelivery window while bounding the
idle state (about 6 KB at worst, nothing for most executions)."""

# Stored codes: fixed by hand, never derived from the enum's order, so adding a state to
# `State` cannot silently change what stored executions mean.
_STATE_CODES: dict[State, int] = {
    State.CREATED: 0,
    State.QUEUED: 1,
    State.RUNNING: 2,
    State.PAUSED: 3,
    State.RETRYING: 4,
    State.SUCCESS: 5,
    State.WARNING: 6,
    State.FAILED: 7,
    State.KILLING: 8,
    State.KILLED: 9,
    State.CANCELLED: 10,
    State.SKIPPED: 11,
}
_STATES_BY_CODE: dict[int, State] = {code: state for state, code in _STATE_CODES.items()}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class StateDecodeError(HeadraceError):
    """Stored execution bytes are corrupt or of an unknown format version."""


class StateVersionError(StateDecodeError):
    """Stored by a newer headrace (a rolling upgrade): valid, just not readable here."""


class TimerKind(StrEnum):
    RETRY = "retry"  # start the next attempt of a task run
    TIMEOUT = "timeout"  # backstop: the worker running the attempt may have died
    PAUSE = "pause"  # a `flow.pause` with a `delay` resumes on its own
    # The executor's own, never in a state: an ended execution leaves its table
    # (services/executor/eviction.py).
    EVICT = "evict"


@dataclass(slots=True)
class Attempt:
    """One run of an attempt. `number` is the attempt's (the request's): a run lost with
    its worker ends FAILED and its redelivered re-run is a new entry with the same
    number, so retries count attempts, not runs."""

    number: int  # 1 for the first attempt
    state: State
    started_at: datetime | None
    ended_at: datetime | None
    error: str | None = None
    # While it runs: the run a worker reported starting (None: none reported yet), and
    # that worker. Dropped when the attempt ends, but by a run lost with its worker,
    # whose late reports must be told from a new run's.
    run_id: str | None = None
    worker_id: str | None = None

    def snapshot(self) -> messages.AttemptSnapshot:
        return messages.AttemptSnapshot(self.state, self.started_at, self.ended_at, self.error)


@dataclass(slots=True)
class TaskRun:
    id: str
    task_id: str
    state: State
    histories: list[StateChange]
    attempts: list[Attempt]
    outputs: dict[str, Any]
    parent_task_run_id: str | None = None
    value: str | None = None
    # The for-each item this run belongs to (its index), when its parent is a for-each.
    iteration: int | None = None
    # A flowable's decision, kept so that it is taken once: the branch of an if/switch
    # ("then", "else", "case:<key>", "defaults"), the rendered items of a for-each.
    data: Any = None

    def snapshot(self, index: int = 0) -> messages.TaskRunSnapshot:
        """`index`: its place among the execution's task runs."""
        return messages.TaskRunSnapshot(
            id=self.id,
            task_id=self.task_id,
            state=self.state,
            histories=list(self.histories),
            attempts=[attempt.snapshot() for attempt in self.attempts],
            outputs=self.outputs,
            parent_task_run_id=self.parent_task_run_id,
            value=self.value,
            index=index,
        )


@dataclass(frozen=True, slots=True)
class Timer:
    """Something the core must hear about at `due`, even across executor restarts."""

    due: datetime
    kind: TimerKind
    task_run_id: str
    attempt: int  # the attempt to start (retry) or to give up on (timeout)


@dataclass(slots=True)
class Execution:
    id: str
    namespace: str
    flow_id: str
    flow_revision: int
    inputs: dict[str, Any]
    labels: dict[str, str]
    trigger: dict[str, Any]
    state: State
    histories: list[StateChange]
    task_runs: list[TaskRun]
    outputs: dict[str, Any]
    seq: int  # sequence number of the last `ExecutionEvent` emitted for this execution
    timers: list[Timer]  # pending, in the order they were set
    created_at: datetime
    # Ids of the last operator commands applied, oldest first (at most MAX_APPLIED_COMMANDS):
    # Kafka delivers at least once, and a redelivered resume or restart must not act twice.
    applied: list[str] = field(default_factory=list)

    def snapshot(self) -> messages.ExecutionSnapshot:
        """The execution without its task runs: bounded size, whatever the flow does."""
        return messages.ExecutionSnapshot(
            namespace=self.namespace,
            flow_id=self.flow_id,
            flow_revision=self.flow_revision,
            state=self.state,
            histories=list(self.histories),
            inputs=self.inputs,
            outputs=self.outputs,
            labels=self.labels,
            trigger=self.trigger,
        )

    def to_bytes(self) -> bytes:
        """The whole state: one record."""
        return self._encode(FORMAT_VERSION, [_encode_task_run(run) for run in self.task_runs])

    def header_bytes(self) -> bytes:
        """The state without its task runs, which are stored apart (`encode_task_run`)."""
        return self._encode(HEADER_FORMAT_VERSION, len(self.task_runs))

    def _encode(self, version: int, task_runs: list[Any] | int) -> bytes:
        return orjson.dumps(
            [
                version,
                self.id,
                self.namespace,
                self.flow_id,
                self.flow_revision,
                self.inputs,
                self.labels,
                self.trigger,
                _STATE_CODES[self.state],
                _encode_histories(self.histories),
                task_runs,
                self.outputs,
                self.seq,
                [_encode_timer(timer) for timer in self.timers],
                _micros(self.created_at),
                self.applied,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Execution:
        """A whole state (`to_bytes`)."""
        execution, stored_apart = cls.from_header(data)
        if stored_apart is not None:
            raise StateDecodeError("a header whose task runs are stored apart, read alone")
        return execution

    @classmethod
    def from_header(cls, data: bytes) -> tuple[Execution, int | None]:
        """A whole state, or a header (`header_bytes`) and the count of its task runs
        stored apart: the execution has none of them yet (`decode_task_run` reads them)."""
        try:
            fields = orjson.loads(data)
            if fields[0] not in _READABLE_VERSIONS:
                if type(fields[0]) is int and fields[0] > HEADER_FORMAT_VERSION:
                    raise StateVersionError(
                        f"execution format version {fields[0]} is newer than this "
                        f"executor's ({HEADER_FORMAT_VERSION})"
                    )
                raise StateDecodeError(f"unknown execution format version {fields[0]!r}")
            if fields[0] == 2:
                fields.append([])
            (
                version,
                id_,
                namespace,
                flow_id,
                flow_revision,
                inputs,
                labels,
                trigger,
                state,
                histories,
                task_runs,
                outputs,
                seq,
                timers,
                created_at,
                applied,
            ) = fields
            stored_apart = None
            if version == HEADER_FORMAT_VERSION:
                if type(task_runs) is not int or task_runs < 0:
                    raise ValueError(f"a header counting {task_runs!r} task runs")
                stored_apart, task_runs = task_runs, []
            execution = cls(
                id=id_,
                namespace=namespace,
                flow_id=flow_id,
                flow_revision=flow_revision,
                inputs=inputs,
                labels=labels,
                trigger=trigger,
                state=_STATES_BY_CODE[state],
                histories=_decode_histories(histories),
                task_runs=[_decode_task_run(task_run) for task_run in task_runs],
                outputs=outputs,
                seq=seq,
                timers=[_decode_timer(timer) for timer in timers],
                created_at=_datetime(created_at),
                applied=applied,
            )
            return execution, stored_apart
        except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise StateDecodeError(f"corrupt stored execution: {exc}") from exc


def encode_task_run(task_run: TaskRun) -> bytes:
    """One task run of a state stored apart (`Execution.header_bytes`)."""
    return orjson.dumps(_encode_task_run(task_run))


def decode_task_run(data: bytes) -> TaskRun:
    try:
        return _decode_task_run(orjson.loads(data))
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise StateDecodeError(f"corrupt stored task run: {exc}") from exc


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _datetime(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _optional_micros(value: datetime | None) -> int | None:
    return None if value is None else _micros(value)


def _optional_datetime(micros: int | None) -> datetime | None:
    return None if micros is None else _datetime(micros)


def _encode_histories(histories: list[StateChange]) -> list[int]:
    # Flat [state, time, state, time, ...]: no per-change array brackets.
    flat: list[int] = []
    for change in histories:
        flat.append(_STATE_CODES[change.state])
        flat.append(_micros(change.date))
    return flat


def _decode_histories(flat: list[int]) -> list[StateChange]:
    pairs = zip(flat[::2], flat[1::2], strict=True)
    return [StateChange(_STATES_BY_CODE[state], _datetime(date)) for state, date in pairs]


def _encode_task_run(task_run: TaskRun) -> list[Any]:
    encoded: list[Any] = [
        task_run.id,
        task_run.task_id,
        _STATE_CODES[task_run.state],
        _encode_histories(task_run.histories),
        [_encode_attempt(attempt) for attempt in task_run.attempts],
        task_run.outputs,
    ]
    # Trailing optional fields only when set: most task runs have none of them.
    optional = [task_run.parent_task_run_id, task_run.value, task_run.iteration, task_run.data]
    while optional and optional[-1] is None:
        optional.pop()
    return encoded + optional


def _decode_task_run(encoded: list[Any]) -> TaskRun:
    id_, task_id, state, histories, attempts, outputs, *optional = encoded
    if len(optional) > 4:
        raise ValueError(f"task run with {len(encoded)} fields")
    parent, value, iteration, data = [*optional, None, None, None, None][:4]
    return TaskRun(
        id=id_,
        task_id=task_id,
        state=_STATES_BY_CODE[state],
        histories=_decode_histories(histories),
        attempts=[_decode_attempt(attempt) for attempt in attempts],
        outputs=outputs,
        parent_task_run_id=parent,
        value=value,
        iteration=iteration,
        data=data,
    )


def _encode_attempt(attempt: Attempt) -> list[Any]:
    encoded = [
        attempt.number,
        _STATE_CODES[attempt.state],
        _optional_micros(attempt.started_at),
        _optional_micros(attempt.ended_at),
        attempt.error,
    ]
    if attempt.run_id is not None:  # running or lost: most attempts stay 5 fields
        encoded += [attempt.run_id, attempt.worker_id]
    return encoded


def _decode_attempt(encoded: list[Any]) -> Attempt:
    number, state, started_at, ended_at, error, *run = encoded
    if len(run) not in (0, 2):
        raise ValueError(f"attempt with {len(encoded)} fields")
    run_id, worker_id = run or (None, None)
    return Attempt(
        number=number,
        state=_STATES_BY_CODE[state],
        started_at=_optional_datetime(started_at),
        ended_at=_optional_datetime(ended_at),
        error=error,
        run_id=run_id,
        worker_id=worker_id,
    )


def _encode_timer(timer: Timer) -> list[Any]:
    return [_micros(timer.due), str(timer.kind), timer.task_run_id, timer.attempt]


def _decode_timer(encoded: list[Any]) -> Timer:
    due, kind, task_run_id, attempt = encoded
    return Timer(_datetime(due), TimerKind(kind), task_run_id, attempt)
