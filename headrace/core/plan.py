"""The flow as a tree the core can walk: every task by id, with its parent and properties.

Built once per `Flow` object (flows are immutable and cached by the loader) and kept in
a small cache keyed by the object's identity. Disabled tasks are left out here, so the
rest of the core never sees them ("as if absent").

A container's children run in *lanes*: a lane is a list of tasks that run one after the
other (`Lane.iteration` is the for-each item it belongs to). A sequential task has one
lane, a parallel or dag task one lane per child, an if/switch one lane (the chosen
branch), a for-each one lane per item; concurrency limits count lanes that are going.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import overload

from headrace.core.context import SCRIPT_TYPES
from headrace.flow import flowables as f
from headrace.flow.model import Flow, Task

MAX_CACHED_FLOWS = 1024  # distinct flow objects indexed at once (the loader caches 512)


@dataclass(frozen=True, slots=True)
class Node:
    task: Task
    parent: str | None  # id of the enclosing flowable task; None at the top level
    branch: str  # top level: "tasks", "errors" or "finally"; else the parent's list key
    properties: f._Properties | None  # parsed, for flowable types


@dataclass(frozen=True, slots=True)
class Lane:
    tasks: list[Task]
    iteration: int | None = None
    value: str | None = None
    depends_on: tuple[str, ...] = ()  # dag: task ids that must have succeeded first


class ItemLanes(Sequence[Lane]):
    """A for-each's lanes, one per item, each made when asked for: a for-each may have
    thousands of items, and a step usually looks at a few of them."""

    __slots__ = ("_items", "_tasks")

    def __init__(self, tasks: list[Task], items: list[str]) -> None:
        self._tasks = tasks
        self._items = items

    @property
    def tasks(self) -> list[Task]:
        """The tasks of every lane: each item runs the same ones."""
        return self._tasks

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Lane: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Lane]: ...

    def __getitem__(self, index: int | slice) -> Lane | Sequence[Lane]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        value = self._items[index]  # IndexError when out of range
        return Lane(self._tasks, index if index >= 0 else index + len(self._items), value)


class PairLanes(Sequence[Lane]):
    """Kestra's `EachParallel`: a lane per item and task (each task of each item runs on
    its own, at once), made when asked for. Lane `k` is item `k // n`, task `k % n`."""

    __slots__ = ("_items", "_position", "_tasks")

    def __init__(self, tasks: list[Task], items: list[str]) -> None:
        self._tasks = tasks
        self._items = items
        self._position = {task.id: i for i, task in enumerate(tasks)}

    def __len__(self) -> int:
        return len(self._items) * len(self._tasks)

    @overload
    def __getitem__(self, index: int) -> Lane: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Lane]: ...

    def __getitem__(self, index: int | slice) -> Lane | Sequence[Lane]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        item, task = divmod(index, len(self._tasks))
        return Lane([self._tasks[task]], item, self._items[item])

    def position(self, task_id: str, iteration: int) -> int | None:
        """The lane of the run of `task_id` for item `iteration`."""
        task = self._position.get(task_id)
        return None if task is None else iteration * len(self._tasks) + task


class StaticLanes(list[Lane]):
    """The lanes of a sequential, parallel or dag task: the same for every run of it, so
    made once per plan, with the lane of each task id (a parallel of a thousand tasks is
    looked at on each of its thousand results)."""

    __slots__ = ("position_of",)

    def __init__(self, lanes: list[Lane]) -> None:
        super().__init__(lanes)
        self.position_of = {task.id: i for i, lane in enumerate(lanes) for task in lane.tasks}


@dataclass(slots=True)
class Plan:
    nodes: dict[str, Node] = field(default_factory=dict)
    main: list[Task] = field(default_factory=list)
    errors: list[Task] = field(default_factory=list)
    finally_: list[Task] = field(default_factory=list)
    after_execution: list[Task] = field(default_factory=list)
    # The ids of the flow's script tasks: their printed values also show under `vars`.
    script_task_ids: frozenset[str] = frozenset()
    # The lanes of containers whose lanes do not depend on their run (`StaticLanes`).
    _static: dict[str, tuple[StaticLanes, int]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def node(self, task_id: str) -> Node:
        return self.nodes[task_id]

    def lanes(self, task: Task, data: object) -> tuple[Sequence[Lane], int]:
        """The lanes of a container task run (given its decision `data`), and its limit.

        Limit 0: no limit. A lane without tasks (an empty branch, every task disabled) is
        left out: it would be done before it started, so the container ends the same.
        """
        static = self._static.get(task.id)
        if static is not None:
            return static
        properties = self.nodes[task.id].properties
        match properties:
            case f.SequentialProperties(tasks=tasks):
                static = StaticLanes(_one_lane(tasks)), 0
            case f.ParallelProperties(tasks=tasks):
                static = StaticLanes([Lane([t]) for t in enabled(tasks)]), properties.limit
            case f.DagProperties(tasks=entries):
                disabled = {e.task.id for e in entries if e.task.disabled}
                lanes = [
                    Lane([e.task], depends_on=tuple(d for d in e.depends_on if d not in disabled))
                    for e in entries
                    if not e.task.disabled
                ]
                static = StaticLanes(lanes), properties.limit
        if static is not None:
            self._static[task.id] = static
            return static
        match properties:
            case f.IfProperties():
                branch = properties.then if data == "then" else properties.else_
                return (_one_lane(branch) if data is not None else []), 0
            case f.SwitchProperties():
                if isinstance(data, str) and data.startswith("case:"):
                    return _one_lane(properties.cases[data[5:]]), 0
                return (_one_lane(properties.defaults) if data is not None else []), 0
            case f.ForEachProperties(tasks=tasks, concurrency_limit=limit):
                children = enabled(tasks)
                items = data if isinstance(data, list) and children else []
                return ItemLanes(children, items), limit
            case f.EachSequentialProperties(tasks=tasks):
                children = enabled(tasks)
                items = data if isinstance(data, list) and children else []
                return ItemLanes(children, items), 1
            case f.EachParallelProperties(tasks=tasks, concurrent=limit):
                children = enabled(tasks)
                items = data if isinstance(data, list) and children else []
                return PairLanes(children, items), limit
            case f.PauseProperties(tasks=tasks):
                # Its tasks run once it was resumed (`data` holds how it ended); a pause
                # that ended FAILED (its `behavior`) runs none of them.
                return (_one_lane(tasks) if data in ("SUCCESS", "WARNING") else []), 0
        return [], 0

    def branches(self, task: Task) -> tuple[list[Task], list[Task]]:
        """A flowable's own `errors` and `finally` tasks (the enabled ones)."""
        properties = self.nodes[task.id].properties
        if isinstance(properties, f._Branches):
            return enabled(properties.errors), enabled(properties.finally_)
        return [], []


def _one_lane(tasks: list[Task]) -> list[Lane]:
    children = enabled(tasks)
    return [Lane(children)] if children else []


def enabled(tasks: list[Task]) -> list[Task]:
    return [task for task in tasks if not task.disabled]


_CACHE: dict[int, tuple[weakref.ref[Flow], Plan]] = {}


def plan_of(flow: Flow) -> Plan:
    """The tree of `flow`, built on first use."""
    cached = _CACHE.get(id(flow))
    if cached is not None and cached[0]() is flow:
        return cached[1]
    plan = _build(flow)
    if len(_CACHE) >= MAX_CACHED_FLOWS:
        _CACHE.clear()  # rare: rebuilding costs well under a millisecond per flow
    _CACHE[id(flow)] = (weakref.ref(flow), plan)
    return plan


def _build(flow: Flow) -> Plan:
    plan = Plan(main=enabled(flow.tasks), errors=enabled(flow.errors))
    plan.finally_ = enabled(flow.finally_)
    plan.after_execution = enabled(flow.after_execution)
    for branch, tasks in (
        ("tasks", flow.tasks),
        ("errors", flow.errors),
        ("finally", flow.finally_),
        ("afterExecution", flow.after_execution),
    ):
        for task in tasks:
            _add(plan, task, None, branch)
    plan.script_task_ids = frozenset(
        task_id for task_id, node in plan.nodes.items() if node.task.type in SCRIPT_TYPES
    )
    return plan


def _add(plan: Plan, task: Task, parent: str | None, branch: str) -> None:
    properties = f.parse_properties(task)
    plan.nodes[task.id] = Node(task, parent, branch, properties)
    for loc, children in f.child_lists(properties):
        for child in children:
            _add(plan, child, task.id, str(loc[0]))
