"""Flowable task types: tasks that run other tasks (sequential, parallel, dag, if, ...).

Their properties are validated here, by one pydantic model per type, and nested tasks are
plain `Task`s, so a flow is a tree. The executor's core runs these types itself; every
other type goes to a worker. `child_lists` is the one place that knows where a flowable
keeps its children (the loader recurses with it, the core indexes the tree with it).

Kestra's names (`io.kestra.plugin.core.flow.Parallel`, ...) are normalised to ours by
`Task` when a flow is loaded (`model.canonical_task_type`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from headrace.flow.durations import Duration
from headrace.flow.limits import MAX_CONCURRENCY
from headrace.flow.model import ID_PATTERN, NAMESPACE_PATTERN, Task

SEQUENTIAL = "flow.sequential"
PARALLEL = "flow.parallel"
DAG = "flow.dag"
IF = "flow.if"
SWITCH = "flow.switch"
FOREACH = "flow.foreach"
SUBFLOW = "flow.subflow"
PAUSE = "flow.pause"
FAIL = "flow.fail"

CONTAINERS = frozenset({SEQUENTIAL, PARALLEL, DAG, IF, SWITCH, FOREACH})
"""Types whose task run is RUNNING while its children run and ends from them."""

DECIDING = frozenset({IF, SWITCH, FOREACH})
"""Containers that take a one-time decision (a branch, the items) before their children run."""


class _Properties(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


class SequentialProperties(_Properties):
    """Runs its tasks one after the other; it fails at the first that fails."""

    tasks: list[Task] = Field(min_length=1, description="Run one after the other.")


class ParallelProperties(_Properties):
    """Runs its tasks at once (at most `concurrency` at a time); ends when all have."""

    tasks: list[Task] = Field(min_length=1, description="Run at once.")
    concurrency: int | None = Field(
        default=None, ge=1, le=MAX_CONCURRENCY, description="At most this many at a time."
    )


class DagTask(_Properties):
    task: Task = Field(description="The task.")
    depends_on: list[str] = Field(
        default_factory=list, description="Ids of the tasks of this dag that must succeed first."
    )


class DagProperties(_Properties):
    """Runs its tasks as soon as the tasks each `dependsOn` have succeeded."""

    tasks: list[DagTask] = Field(min_length=1, description="Each a `task` and its `dependsOn`.")
    concurrency: int | None = Field(
        default=None, ge=1, le=MAX_CONCURRENCY, description="At most this many at a time."
    )


class IfProperties(_Properties):
    """Runs `then` when `condition` renders true, else `else`."""

    condition: Any = Field(description="An expression, or a plain boolean.")
    then: list[Task] = Field(min_length=1, description="Run when `condition` is true.")
    else_: list[Task] = Field(
        default_factory=list, alias="else", description="Run when `condition` is false."
    )


class SwitchProperties(_Properties):
    """Runs the case named by `value`'s text, or `defaults` when no case matches."""

    value: Any = Field(description="An expression; its text selects the case.")
    cases: dict[str, list[Task]] = Field(
        default_factory=dict, description="Tasks by the text of `value` that runs them."
    )
    defaults: list[Task] = Field(default_factory=list, description="Run when no case matches.")


class ForEachProperties(_Properties):
    """Runs its tasks once per item of `values` (`{{ taskrun.value }}` in them).

    `concurrencyLimit` items at a time; 0 runs every item at once.
    """

    values: list[Any] | str = Field(description="A list, or an expression giving one.")
    concurrency_limit: int = Field(
        default=1, ge=0, le=MAX_CONCURRENCY, description="Items at a time; 0: every item at once."
    )
    tasks: list[Task] = Field(min_length=1, description="Run once per item.")


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


class PauseProperties(_Properties):
    """Pauses the execution: for `delay`, or until it is resumed (API or CLI)."""

    delay: Duration | None = Field(
        default=None, description="Resume by itself after this long; none: wait for a resume."
    )


class FailProperties(_Properties):
    """Fails the task run with `message`: ends a branch that must not be reached."""

    message: str = Field(
        default="failed on purpose", description="The reason; may hold expressions."
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
    match properties:
        case SequentialProperties(tasks=tasks) | ParallelProperties(tasks=tasks):
            return [(("tasks",), tasks)]
        case ForEachProperties(tasks=tasks):
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


def child_list_keys(task_type: str) -> frozenset[str]:
    """Property keys that hold nested tasks (left out of template checks: they recurse)."""
    return {
        SEQUENTIAL: frozenset({"tasks"}),
        PARALLEL: frozenset({"tasks"}),
        FOREACH: frozenset({"tasks"}),
        DAG: frozenset({"tasks"}),
        IF: frozenset({"then", "else"}),
        SWITCH: frozenset({"cases", "defaults"}),
    }.get(task_type, frozenset())


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
