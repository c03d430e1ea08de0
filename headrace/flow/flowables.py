"""Flowable task types: tasks that run other tasks (sequential, parallel, dag, if, ...).

Their properties are validated here, by one pydantic model per type, and nested tasks are
plain `Task`s, so a flow is a tree. The executor's core runs these types itself; every
other type goes to a worker. `child_lists` is the one place that knows where a flowable
keeps its children (the loader recurses with it, the core indexes the tree with it).

Kestra's names (`io.kestra.plugin.core.flow.Parallel`, ...) are normalised to ours by
`Task` when a flow is loaded (`model.canonical_task_type`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from headrace.flow.durations import Duration
from headrace.flow.limits import MAX_CONCURRENCY
from headrace.flow.model import ID_PATTERN, NAMESPACE_PATTERN, Input, Task

SEQUENTIAL = "flow.sequential"
PARALLEL = "flow.parallel"
DAG = "flow.dag"
IF = "flow.if"
SWITCH = "flow.switch"
FOREACH = "flow.foreach"
SUBFLOW = "flow.subflow"
PAUSE = "flow.pause"
FAIL = "flow.fail"
EACH_SEQUENTIAL = "flow.eachsequential"
EACH_PARALLEL = "flow.eachparallel"
ALLOW_FAILURE = "flow.allowfailure"
WORKING_DIRECTORY = "flow.workingdirectory"
EXIT = "flow.exit"

LOOPS = frozenset({FOREACH, EACH_SEQUENTIAL, EACH_PARALLEL})
"""Containers that run their tasks once per item (`{{ taskrun.value }}`)."""

CONTAINERS = frozenset(
    {SEQUENTIAL, PARALLEL, DAG, IF, SWITCH, ALLOW_FAILURE, WORKING_DIRECTORY, *LOOPS}
)
"""Types whose task run is RUNNING while its children run and ends from them."""

DECIDING = frozenset({IF, SWITCH, *LOOPS})
"""Containers that take a one-time decision (a branch, the items) before their children run."""


class _Properties(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


class _Branches(_Properties):
    """Kestra's flowables take `errors` and `finally` of their own (as a flow does)."""

    errors: list[Task] = Field(
        default_factory=list,
        description="Run, one after the other, when a task of this flowable failed.",
    )
    finally_: list[Task] = Field(
        default_factory=list,
        alias="finally",
        description="Always run at the end of this flowable, after `errors`.",
    )


class _Limited(_Properties):
    """`concurrency` (ours) or `concurrent` (Kestra's: 0 is no limit): lanes at a time."""

    concurrency: int | None = Field(
        default=None, ge=1, le=MAX_CONCURRENCY, description="At most this many at a time."
    )
    concurrent: int | None = Field(
        default=None,
        ge=0,
        le=MAX_CONCURRENCY,
        description="Kestra's name of `concurrency`: at most this many at a time; 0: no limit.",
    )

    @model_validator(mode="after")
    def _one_limit(self) -> _Limited:
        if self.concurrency is not None and self.concurrent is not None:
            raise ValueError("give `concurrent` or `concurrency`, not both (they are one limit)")
        return self

    @property
    def limit(self) -> int:
        """Lanes going at once; 0: no limit."""
        return self.concurrency or self.concurrent or 0


class SequentialProperties(_Branches):
    """Runs its tasks one after the other; it fails at the first that fails."""

    tasks: list[Task] = Field(min_length=1, description="Run one after the other.")


class AllowFailureProperties(SequentialProperties):
    """Runs its tasks one after the other; a failure stops them and ends this task
    WARNING, and the flow goes on (Kestra's `AllowFailure`)."""


class WorkingDirectoryProperties(SequentialProperties):
    """Kestra's `WorkingDirectory`: runs its tasks one after the other. Each task runs in
    its own directory (on any worker): `inputFiles`, `outputFiles` and `namespaceFiles`
    go on the tasks that read or write the files."""

    input_files: Any = Field(
        default=None, description="Not written by headrace: put `inputFiles` on the tasks."
    )
    output_files: Any = Field(
        default=None, description="Not read by headrace: put `outputFiles` on the tasks."
    )
    namespace_files: Any = Field(
        default=None, description="Not copied by headrace: put `namespaceFiles` on the tasks."
    )
    cache: Any = Field(default=None, description="Not kept by headrace: each run starts empty.")


class ParallelProperties(_Limited, _Branches):
    """Runs its tasks at once (at most `concurrency`/`concurrent` at a time); ends when
    all have."""

    tasks: list[Task] = Field(min_length=1, description="Run at once.")


class DagTask(_Properties):
    task: Task = Field(description="The task.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of the tasks of this dag that must succeed first."
    )


class DagProperties(_Limited, _Branches):
    """Runs its tasks as soon as the tasks each `dependsOn` have succeeded."""

    tasks: list[DagTask] = Field(min_length=1, description="Each a `task` and its `dependsOn`.")


class IfProperties(_Branches):
    """Runs `then` when `condition` renders true, else `else`."""

    condition: Any = Field(description="An expression, or a plain boolean.")
    then: list[Task] = Field(min_length=1, description="Run when `condition` is true.")
    else_: list[Task] = Field(
        default_factory=list, alias="else", description="Run when `condition` is false."
    )


class SwitchProperties(_Branches):
    """Runs the case named by `value`'s text, or `defaults` when no case matches."""

    value: Any = Field(description="An expression; its text selects the case.")
    cases: dict[str, list[Task]] = Field(
        default_factory=dict, description="Tasks by the text of `value` that runs them."
    )
    defaults: list[Task] = Field(default_factory=list, description="Run when no case matches.")


class ForEachProperties(_Branches):
    """Runs its tasks once per item of `values` (`{{ taskrun.value }}` in them).

    `concurrencyLimit` items at a time; 0 runs every item at once.
    """

    values: list[Any] | str = Field(description="A list, or an expression giving one.")
    concurrency_limit: int = Field(
        default=1, ge=0, le=MAX_CONCURRENCY, description="Items at a time; 0: every item at once."
    )
    tasks: list[Task] = Field(min_length=1, description="Run once per item.")


class EachSequentialProperties(_Branches):
    """Kestra's `EachSequential`: runs its tasks for each distinct item of `value`, one
    item after the other (`{{ taskrun.value }}` in them)."""

    value: list[Any] | str = Field(description="A list, or JSON text of one (may render).")
    tasks: list[Task] = Field(min_length=1, description="Run once per item, in order.")


class EachParallelProperties(_Branches):
    """Kestra's `EachParallel`: runs each of its tasks for each distinct item of `value`,
    all at once (at most `concurrent` task runs at a time; 0: no limit)."""

    value: list[Any] | str = Field(description="A list, or JSON text of one (may render).")
    tasks: list[Task] = Field(min_length=1, description="Each runs once per item, at once.")
    concurrent: int = Field(
        default=0, ge=0, le=MAX_CONCURRENCY, description="Task runs at a time; 0: no limit."
    )


class SubflowProperties(_Properties):
    """Starts an execution of another flow, and by default waits for its end.

    With `transmitFailed` (the default) a failed subflow fails this task.
    """

    namespace: str = Field(pattern=NAMESPACE_PATTERN, description="The called flow's namespace.")
    flow_id: str = Field(pattern=ID_PATTERN, description="The called flow's id.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="The called flow's inputs; may hold expressions."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Labels of the execution started."
    )
    wait: bool = Field(
        default=True,
        description="Wait for the called execution's end; its state and outputs become this task's.",
    )
    transmit_failed: bool = Field(
        default=True, description="A failed subflow fails this task (with `wait`)."
    )
    inherit_labels: bool = Field(
        default=False, description="The called execution gets this execution's labels too."
    )
    revision: int | None = Field(
        default=None, ge=1, description="The called flow's revision; none: its latest."
    )
    outputs: dict[str, Any] | None = Field(
        default=None,
        description="Kestra's deprecated outputs: expressions rendered over the called"
        " execution when it ends (read as `outputs.<task>.outputs.<key>`); the called"
        " flow's own `outputs` win when it has some.",
    )
    schedule_date: Any = Field(
        default=None, description="Not honoured: the called execution starts at once."
    )
    restart_behavior: Literal["RETRY_FAILED", "NEW_EXECUTION"] | None = Field(
        default=None,
        description="On a restart of this execution, a failed subflow task starts a new"
        " execution of the called flow (NEW_EXECUTION); RETRY_FAILED is not honoured.",
    )


PauseBehavior = Literal["RESUME", "WARN", "FAIL", "CANCEL"]


class PauseProperties(_Branches):
    """Pauses the execution: for `pauseDuration` (`delay`), or until it is resumed."""

    delay: Duration | None = Field(
        default=None, description="Resume by itself after this long; none: wait for a resume."
    )
    pause_duration: Duration | None = Field(
        default=None, description="Kestra's newer name of `delay`."
    )
    behavior: PauseBehavior = Field(
        default="RESUME",
        description="When the duration ends: RESUME (SUCCESS), WARN (WARNING), FAIL (FAILED),"
        " CANCEL (the execution ends CANCELLED). A resume before then always succeeds.",
    )
    on_resume: list[Input] = Field(
        default_factory=list,
        description="Inputs a resume gives, validated and coerced like flow inputs;"
        " read as `outputs.<pause>.onResume.<id>`.",
    )
    tasks: list[Task] = Field(
        default_factory=list, description="Kestra's deprecated tasks: run after the resume."
    )

    @model_validator(mode="after")
    def _one_duration(self) -> PauseProperties:
        if self.delay is not None and self.pause_duration is not None:
            raise ValueError("give `pauseDuration` or `delay`, not both (`delay` is its old name)")
        return self

    @property
    def duration(self) -> timedelta | None:
        return self.pause_duration if self.pause_duration is not None else self.delay


class FailProperties(_Properties):
    """Fails the task run with `message` (Kestra: `errorMessage`), or, with `condition`,
    only when the condition renders true (else it succeeds)."""

    message: str | None = Field(default=None, description="The reason; may hold expressions.")
    error_message: str | None = Field(default=None, description="Kestra's name of `message`.")
    condition: Any = Field(
        default=None, description="Fail only when this renders true; none: fail every time."
    )

    @model_validator(mode="after")
    def _one_message(self) -> FailProperties:
        if self.message is not None and self.error_message is not None:
            raise ValueError("give `errorMessage` or `message`, not both (they are one reason)")
        return self

    @property
    def reason(self) -> str:
        chosen = self.message if self.message is not None else self.error_message
        return "failed on purpose" if chosen is None else chosen


class ExitProperties(_Properties):
    """Kestra's `Exit`: ends the execution now, in `state`. KILLED kills what still runs;
    with another state the task runs still going end as they would, and then the
    execution ends in `state`."""

    state: Literal["SUCCESS", "WARNING", "KILLED", "FAILED", "CANCELED"] = Field(
        default="SUCCESS", description="The execution's end state (CANCELED: CANCELLED)."
    )


PROPERTY_MODELS: dict[str, type[_Properties]] = {
    SEQUENTIAL: SequentialProperties,
    PARALLEL: ParallelProperties,
    DAG: DagProperties,
    IF: IfProperties,
    SWITCH: SwitchProperties,
    FOREACH: ForEachProperties,
    SUBFLOW: SubflowProperties,
    PAUSE: PauseProperties,
    FAIL: FailProperties,
    EACH_SEQUENTIAL: EachSequentialProperties,
    EACH_PARALLEL: EachParallelProperties,
    ALLOW_FAILURE: AllowFailureProperties,
    WORKING_DIRECTORY: WorkingDirectoryProperties,
    EXIT: ExitProperties,
}

Loc = tuple[str | int, ...]


def parse_properties(task: Task) -> _Properties | None:
    """The typed properties of a flowable task; None for a worker's task type.

    Raises pydantic's `ValidationError`; a loaded flow has been validated already.
    """
    model = PROPERTY_MODELS.get(task.type)
    return None if model is None else model.model_validate(task.properties)


def child_lists(properties: _Properties | None) -> list[tuple[Loc, list[Task]]]:
    """Every list of nested tasks, with its location relative to the task."""
    branches: list[tuple[Loc, list[Task]]] = []
    if isinstance(properties, _Branches):
        branches = [(("errors",), properties.errors), (("finally",), properties.finally_)]
    return _own_lists(properties) + branches


def _own_lists(properties: _Properties | None) -> list[tuple[Loc, list[Task]]]:
    match properties:
        case (
            SequentialProperties(tasks=tasks)
            | ParallelProperties(tasks=tasks)
            | ForEachProperties(tasks=tasks)
            | EachSequentialProperties(tasks=tasks)
            | EachParallelProperties(tasks=tasks)
            | PauseProperties(tasks=tasks)
        ):
            return [(("tasks",), tasks)]
        case DagProperties(tasks=entries):
            return [(("tasks", i, "task"), [entry.task]) for i, entry in enumerate(entries)]
        case IfProperties():
            return [(("then",), properties.then), (("else",), properties.else_)]
        case SwitchProperties():
            cases: list[tuple[Loc, list[Task]]] = [
                (("cases", key), tasks) for key, tasks in properties.cases.items()
            ]
            return [*cases, (("defaults",), properties.defaults)]
    return []


_BRANCH_KEYS = frozenset({"errors", "finally"})


def child_list_keys(task_type: str) -> frozenset[str]:
    """Property keys that hold nested tasks (left out of template checks: they recurse)."""
    own = {
        SEQUENTIAL: frozenset({"tasks"}),
        PARALLEL: frozenset({"tasks"}),
        FOREACH: frozenset({"tasks"}),
        EACH_SEQUENTIAL: frozenset({"tasks"}),
        EACH_PARALLEL: frozenset({"tasks"}),
        ALLOW_FAILURE: frozenset({"tasks"}),
        WORKING_DIRECTORY: frozenset({"tasks"}),
        PAUSE: frozenset({"tasks"}),
        DAG: frozenset({"tasks"}),
        IF: frozenset({"then", "else"}),
        SWITCH: frozenset({"cases", "defaults"}),
    }.get(task_type)
    return frozenset() if own is None else own | _BRANCH_KEYS


def dag_problems(properties: DagProperties) -> list[tuple[Loc, str]]:
    """Unknown `dependsOn` ids and cycles, located under the dag task."""
    problems: list[tuple[Loc, str]] = []
    ids = [entry.task.id for entry in properties.tasks]
    known = set(ids)
    for i, entry in enumerate(properties.tasks):
        for j, dependency in enumerate(entry.depends_on):
            if dependency not in known:
                problems.append(
                    (("tasks", i, "dependsOn", j), f"unknown task {dependency!r} in this dag")
                )
            elif dependency == entry.task.id:
                problems.append((("tasks", i, "dependsOn", j), "a task cannot depend on itself"))
    graph = {
        entry.task.id: [d for d in entry.depends_on if d in known and d != entry.task.id]
        for entry in properties.tasks
    }
    cycle = _find_cycle(graph)
    if cycle:
        index = ids.index(cycle[0])
        problems.append((("tasks", index, "dependsOn"), f"dependency cycle: {' -> '.join(cycle)}"))
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One cycle of `graph` as a path that ends where it starts, or []."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return []
