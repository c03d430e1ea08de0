"""What travels on Kafka: one dataclass per topic value, decoded at the edge.

Each class mirrors the Avro schema of the same name in `schemas/`. Fields that hold
free-form JSON (inputs, outputs, properties) are `dict`s here and orjson-encoded strings
on the wire; `headrace.codec` does that conversion, nothing else needs to know.
Times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from headrace.states import State

Json = dict[str, Any]


class LogLevel(StrEnum):
    TRACE = "TRACE"
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"

    def at_least(self, minimum: LogLevel) -> bool:
        """Whether this level is `minimum` or more severe (members rise in severity)."""
        order = list(LogLevel)
        return order.index(self) >= order.index(minimum)


class CommandKind(StrEnum):
    TIMER = "TIMER"
    KILL = "KILL"
    RESUME = "RESUME"
    RESTART = "RESTART"
    REPLAY = "REPLAY"  # on the old execution: start a new one from one of its task runs
    CHILD_ENDED = "CHILD_ENDED"  # a subflow's execution tells its parent it ended
    SLOT_GRANTED = "SLOT_GRANTED"  # the flow's concurrency slot is this execution's
    SLOT_DENIED = "SLOT_DENIED"  # limit reached; payload {"behavior": "CANCEL"|"FAIL"}
    PROBE = "PROBE"  # the watchdog asks whether the execution can progress; payload {"indexState"}


# The commands an operator (or the watchdog) sends, each answered by a `CommandOutcome`.
ANSWERED_COMMANDS = frozenset(
    {
        CommandKind.KILL,
        CommandKind.RESUME,
        CommandKind.RESTART,
        CommandKind.REPLAY,
        CommandKind.PROBE,
    }
)


class CommandStatus(StrEnum):
    APPLIED = "APPLIED"  # it took effect (a probe: the executor holds the execution)
    IGNORED = "IGNORED"  # the execution's state does not allow it; `reason` says why
    UNKNOWN = "UNKNOWN"  # the executor holds no state for this execution


@dataclass(slots=True)
class TriggerEvent:
    """Starts one execution of a flow revision (topic `triggers`)."""

    SCHEMA: ClassVar[str] = "io.headrace.TriggerEvent"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("inputs", "trigger")

    event_id: str
    execution_id: str
    namespace: str
    flow_id: str
    flow_revision: int
    inputs: Json
    time: datetime
    labels: dict[str, str] = field(default_factory=dict)
    trigger: Json = field(default_factory=dict)


@dataclass(slots=True)
class TaskRequest:
    """One attempt of one task run, for a worker (topic `task-requests`)."""

    SCHEMA: ClassVar[str] = "io.headrace.TaskRequest"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("properties",)

    execution_id: str
    namespace: str
    flow_id: str
    flow_revision: int
    task_run_id: str
    task_id: str
    attempt: int
    type: str
    properties: Json
    time: datetime
    timeout_ms: int | None = None
    # Which markers in `properties` the worker may resolve (see headrace.secret_markers).
    secret_names: list[str] = field(default_factory=list)
    secret_nonce: str = ""
    log_level: LogLevel | None = None  # the task's `logLevel`: lines below it are dropped


@dataclass(slots=True)
class TaskResult:
    """A worker's report on one run of one attempt (topic `task-results`): RUNNING when
    the run starts, then its outcome."""

    SCHEMA: ClassVar[str] = "io.headrace.TaskResult"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("outputs",)

    execution_id: str
    task_run_id: str
    attempt: int
    state: State
    started_at: datetime
    ended_at: datetime
    outputs: Json = field(default_factory=dict)
    error: str | None = None
    worker_id: str = ""
    # Random per run: a redelivered request runs again under another (empty: older worker).
    run_id: str = ""


@dataclass(slots=True)
class LogRecord:
    """One log line of an execution (topic `logs`)."""

    SCHEMA: ClassVar[str] = "io.headrace.LogRecord"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    id: str
    execution_id: str
    namespace: str
    flow_id: str
    time: datetime
    level: LogLevel
    message: str
    task_run_id: str | None = None
    task_id: str | None = None
    attempt: int | None = None


@dataclass(slots=True)
class StateChange:
    state: State
    date: datetime


@dataclass(slots=True)
class ExecutionSnapshot:
    """An execution without its task runs: bounded size, whatever the flow does."""

    namespace: str
    flow_id: str
    flow_revision: int
    state: State
    histories: list[StateChange]
    inputs: Json
    outputs: Json = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    trigger: Json = field(default_factory=dict)


@dataclass(slots=True)
class AttemptSnapshot:
    state: State
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None


@dataclass(slots=True)
class TaskRunSnapshot:
    id: str
    task_id: str
    state: State
    histories: list[StateChange]
    attempts: list[AttemptSnapshot]
    outputs: Json = field(default_factory=dict)
    parent_task_run_id: str | None = None
    value: str | None = None
    # Its place among the execution's task runs when the event was made: orders the runs
    # one step created (they share the step's time and seq).
    index: int = 0


@dataclass(slots=True)
class CommandOutcome:
    """What the executor did with a kill, resume, restart, replay or probe."""

    command_id: str
    kind: CommandKind
    status: CommandStatus
    # Why it was ignored; for a probe, why the execution cannot progress (None: it can).
    reason: str | None = None
    state: State | None = None  # the execution's state as the executor holds it


@dataclass(slots=True)
class ExecutionEvent:
    """What one step changed, or a command's outcome (topic `executions`).

    A step's event holds the execution's snapshot if it changed and every task run it
    changed; `seq` grows by one per step, so consumers can drop replayed or stale events.
    A step changing many task runs may travel as several events of the same seq, each
    task run in one of them. A `command` event repeats the execution's current seq (0
    when the executor does not know it).
    """

    SCHEMA: ClassVar[str] = "io.headrace.ExecutionEvent"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    execution_id: str
    seq: int
    time: datetime
    execution: ExecutionSnapshot | None = None
    task_runs: list[TaskRunSnapshot] = field(default_factory=list)
    command: CommandOutcome | None = None


@dataclass(slots=True)
class ExecutionCommand:
    """Acts on a running execution (topic `execution-commands`): timers, kill, resume."""

    SCHEMA: ClassVar[str] = "io.headrace.ExecutionCommand"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ("payload",)

    command_id: str
    execution_id: str
    kind: CommandKind
    time: datetime
    task_run_id: str | None = None
    attempt: int | None = None
    payload: Json = field(default_factory=dict)


@dataclass(slots=True)
class TaskKill:
    """Cancels one attempt wherever it runs (topic `task-control`, read by every worker)."""

    SCHEMA: ClassVar[str] = "io.headrace.TaskKill"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    execution_id: str
    task_run_id: str
    attempt: int
    time: datetime
    run_id: str = ""  # only this run of the attempt; empty: every run


class SlotRequestKind(StrEnum):
    ACQUIRE = "ACQUIRE"
    RELEASE = "RELEASE"


class ConcurrencyBehavior(StrEnum):
    """What happens to an execution that finds its flow's concurrency limit reached."""

    QUEUE = "QUEUE"
    CANCEL = "CANCEL"
    FAIL = "FAIL"


@dataclass(slots=True)
class SlotRequest:
    """Asks for or returns a flow's running slot (topic `flow-slots`, keyed by flow)."""

    SCHEMA: ClassVar[str] = "io.headrace.SlotRequest"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    request_id: str
    flow_key: str
    execution_id: str
    kind: SlotRequestKind
    time: datetime
    limit: int = 1
    behavior: ConcurrencyBehavior = ConcurrencyBehavior.QUEUE


@dataclass(slots=True)
class FlowRevision:
    """One revision of a flow, with its number: what readers of `flows` derive from the
    changes, and a record of its own there (keyed by revision) when republished from the
    `flows` table or written by a release that stored flows in PostgreSQL first."""

    SCHEMA: ClassVar[str] = "io.headrace.FlowRevision"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    namespace: str
    flow_id: str
    revision: int
    source: str
    created_at: datetime
    deleted: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.flow_id}@{self.revision}"


class FlowChangeAction(StrEnum):
    SAVE = "SAVE"  # the source as the flow's latest revision, unless it already is
    CREATE = "CREATE"  # likewise, unless the flow exists
    DELETE = "DELETE"  # a tombstone revision, if the flow exists


@dataclass(slots=True)
class FlowChange:
    """A change to a flow a gateway asks for (topic `flows`): every reader of the topic
    turns it into the same revision, or into none (`headrace.flow_log`)."""

    SCHEMA: ClassVar[str] = "io.headrace.FlowChange"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    namespace: str
    flow_id: str
    change_id: str
    action: FlowChangeAction
    source: str
    time: datetime

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.flow_id}!{self.change_id}"


@dataclass(slots=True)
class FlowChangeItem:
    """One flow's part of a `FlowChangeSet` (not a message of its own)."""

    namespace: str
    flow_id: str
    action: FlowChangeAction
    source: str  # empty for a DELETE


@dataclass(slots=True)
class FlowChangeSet:
    """Changes to many flows in one record (topic `flows`), applied by every reader as
    one, in their order, at the set's place in the topic: all or nothing, since a record
    is written whole or not at all (`flow apply`, `POST /api/v1/flows/bulk`)."""

    SCHEMA: ClassVar[str] = "io.headrace.FlowChangeSet"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    change_id: str
    changes: list[FlowChangeItem]
    time: datetime

    @property
    def key(self) -> str:
        # No `/`: no flow's key looks like it; unique, so compaction keeps every set.
        return f"changes!{self.change_id}"


@dataclass(slots=True)
class TriggerSwitch:
    """A trigger's runtime switch (topic `flows`, compacted, keyed by trigger): readers of
    the topic honour it without asking PostgreSQL."""

    SCHEMA: ClassVar[str] = "io.headrace.TriggerSwitch"
    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()

    namespace: str
    flow_id: str
    trigger_id: str
    disabled: bool
    time: datetime

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.flow_id}#{self.trigger_id}"


Message = (
    TriggerEvent
    | TaskRequest
    | TaskResult
    | LogRecord
    | ExecutionEvent
    | ExecutionCommand
    | TaskKill
    | SlotRequest
    | FlowRevision
    | FlowChange
    | FlowChangeSet
    | TriggerSwitch
)
MESSAGE_TYPES: tuple[type, ...] = (
    TriggerEvent,
    TaskRequest,
    TaskResult,
    LogRecord,
    ExecutionEvent,
    ExecutionCommand,
    TaskKill,
    SlotRequest,
    FlowRevision,
    FlowChange,
    FlowChangeSet,
    TriggerSwitch,
)
