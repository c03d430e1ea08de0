"""`Transition`: one step of `advance` in the making, and the primitives every move uses.

It holds a copy-on-write copy of the execution, indexes of its task runs (by id, and by
parent + task + for-each item) built on first use, and collects what to emit. The flow
semantics that use these primitives live in `tree` (the task-run tree) and `advance`
(one handler per event).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

from headrace import messages
from headrace.core.concurrency import claim_open, slot_request
from headrace.core.context import outputs_visible_while_running, task_outputs
from headrace.core.events import Command, EmitLog, PublishEvent, RequestSlot, SetTimer
from headrace.core.ids import log_id
from headrace.core.plan import Node, Plan, plan_of
from headrace.core.state import Execution, TaskRun, Timer, TimerKind
from headrace.flow.model import Flow, Task
from headrace.messages import LogLevel, SlotRequestKind, StateChange
from headrace.states import State

TIMEOUT_GRACE = timedelta(seconds=30)
"""Added to a task's `timeout` before the executor gives up on an attempt. The worker
enforces `timeout_ms` itself and reports the failure; the executor's timer is only the
backstop for a worker that died, so it must not race the worker's own report."""

_EXECUTION = -1  # key of the execution among the entities a step changed
_SUCCEEDED = (State.SUCCESS, State.WARNING)  # the task runs whose outputs are visible

ChildKey = tuple[str | None, str, int | None]  # parent task run id, task id, iteration


TaskRunIndex = tuple[dict[str, int], dict[ChildKey, int], dict[str | None, list[int]]]


class Carry:
    """What a step learnt of an execution's task runs, handed to the next step of the same
    execution (the executor applies a batch's events one after the other): the indexes
    of its task runs, and the lane statuses of its containers with the task runs changed
    since they were taken. A cache, never a state: a step takes it only if its input is
    the very execution object the step before returned, so every step gives the same
    result with it or without it (tests/unit/test_core_tree_properties.py replays its
    worlds with one). Without it, a for-each of n items looks at every started item at
    each result: n² in all."""

    __slots__ = ("dirty", "execution", "index", "lanes")

    def __init__(self) -> None:
        self.execution: Execution | None = None  # what the rest is true of
        self.index: TaskRunIndex | None = None
        self.lanes: dict[str | None, dict[int, Any]] = {}  # container id -> lane statuses
        self.dirty: dict[str | None, set[int]] = {}  # container id -> children changed since


_CARRY: ContextVar[Carry | None] = ContextVar("carry", default=None)


@contextmanager
def carrying(carry: Carry | None) -> Iterator[None]:
    """The Transitions made inside take and hand on `carry` (see `Carry`)."""
    token = _CARRY.set(carry)
    try:
        yield
    finally:
        _CARRY.reset(token)


@dataclass(slots=True)
class Step:
    """What `advance` returns: the new execution state and the commands to emit."""

    execution: Execution | None
    commands: list[Command]
    refusal: str | None = None  # why a command changed nothing, when the state cannot say


class Transition:
    """One step in the making: a writable copy of the execution and what to emit."""

    __slots__ = (
        "_by_id",
        "_by_key",
        "_by_parent",
        "_carry",
        "_changed",
        "_commands",
        "_logs",
        "_outputs",
        "_writable",
        "dirty",
        "execution",
        "flow",
        "lanes",
        "now",
        "plan",
    )

    def __init__(self, execution: Execution, flow: Flow, now: datetime, fresh: bool = False):
        self.execution = execution if fresh else _shallow_copy(execution)
        self.flow = flow
        self.plan: Plan = plan_of(flow)
        self.now = now
        # Entities changed (task-run index or _EXECUTION), in order of first change: a
        # dict keeps insertion order and ignores repeats.
        self._changed: dict[int, None] = {}
        self._writable: set[int] = set()
        self._logs: list[tuple[messages.LogLevel, str, int | None, int | None]] = []
        self._commands: list[Command] = []
        self._by_id: dict[str, int] | None = None
        self._by_key: dict[ChildKey, int] | None = None
        self._by_parent: dict[str | None, list[int]] | None = None
        self._outputs: dict[str, Any] | None = None
        # Lane statuses of containers as last evaluated, and their children changed since
        # (tree.py keeps them; `changed` marks them): carried from step to step.
        self.lanes: dict[str | None, dict[int, Any]] = {}
        self.dirty: dict[str | None, set[int]] = {}
        self._carry = _CARRY.get()
        carry = self._carry
        if carry is not None and not fresh and carry.execution is execution:
            if carry.index is not None:
                self._by_id, self._by_key, self._by_parent = carry.index
            self.lanes, self.dirty = carry.lanes, carry.dirty
            carry.execution = None  # in use: a step that fails leaves it to no one

    # ------------------------------------------------------------------ lookups

    def _index(self) -> tuple[dict[str, int], dict[ChildKey, int], dict[str | None, list[int]]]:
        if self._by_id is None or self._by_key is None or self._by_parent is None:
            self._by_id, self._by_key, self._by_parent = {}, {}, {}
            for i, run in enumerate(self.execution.task_runs):
                self._by_id[run.id] = i
                self._by_key[(run.parent_task_run_id, run.task_id, run.iteration)] = i
                self._by_parent.setdefault(run.parent_task_run_id, []).append(i)
        return self._by_id, self._by_key, self._by_parent

    def find(self, task_run_id: str | None) -> int | None:
        if task_run_id is None:
            return None
        return self._index()[0].get(task_run_id)

    def child(self, parent_id: str | None, task_id: str, iteration: int | None) -> int | None:
        return self._index()[1].get((parent_id, task_id, iteration))

    def parent_index(self, index: int) -> int | None:
        return self.find(self.execution.task_runs[index].parent_task_run_id)

    def children(self, index: int) -> list[int]:
        """Indexes of the task runs under the one at `index`, in creation order."""
        return self.children_of(self.execution.task_runs[index].id)

    def children_of(self, parent_id: str) -> list[int]:
        return list(self._index()[2].get(parent_id, ()))

    def outputs(self) -> dict[str, Any]:
        """`{{ outputs }}` now, built once per step until a task run's success changes it
        (a for-each starting thousands of items renders each against the same outputs).

        Valid because task runs are written only through this class, and a run's outputs
        only before the state change that makes them visible (SUCCESS or WARNING).
        """
        if self._outputs is None:
            self._outputs = task_outputs(self.execution, self.plan.script_task_ids)
        return self._outputs

    def node_of(self, index: int) -> Node:
        return self.plan.node(self.execution.task_runs[index].task_id)

    def task_of(self, index: int) -> Task:
        """The flow's task that the task run at `index` runs."""
        return self.node_of(index).task

    @property
    def killing(self) -> bool:
        return self.execution.state is State.KILLING

    @property
    def generation(self) -> int:
        """How many times the execution was restarted (from its state history).

        A restart goes RUNNING again, or QUEUED first when the flow has a concurrency limit.
        """
        histories = self.execution.histories
        return sum(
            1
            for before, after in pairwise(histories)
            if after.state in (State.RUNNING, State.QUEUED)
            and before.state in (State.FAILED, State.KILLED)
        )

    # ------------------------------------------------------------------ writes

    def changed(self, key: int) -> None:
        self._changed.setdefault(key)
        if key != _EXECUTION:
            parent = self.execution.task_runs[key].parent_task_run_id
            if parent in self.lanes:  # its statuses are stale for this child's lane
                self.dirty.setdefault(parent, set()).add(key)

    def changed_execution(self) -> None:
        """Publish the execution's snapshot at the end of this step, changed or not."""
        self.changed(_EXECUTION)

    def changed_now(self, index: int) -> bool:
        """Whether the task run at `index` changed in this step."""
        return index in self._changed

    def task_run(self, index: int) -> TaskRun:
        """The task run at `index`, copied on first write so the input stays untouched."""
        if index not in self._writable:
            old = self.execution.task_runs[index]
            self.execution.task_runs[index] = TaskRun(
                old.id,
                old.task_id,
                old.state,
                list(old.histories),
                list(old.attempts),  # Attempt objects are replaced, never mutated
                old.outputs,
                old.parent_task_run_id,
                old.value,
                old.iteration,
                old.data,
            )
            self._writable.add(index)
        return self.execution.task_runs[index]

    def add_task_run(self, run: TaskRun) -> int:
        by_id, by_key, by_parent = self._index()
        index = len(self.execution.task_runs)
        self.execution.task_runs.append(run)
        by_id[run.id] = index
        by_key[(run.parent_task_run_id, run.task_id, run.iteration)] = index
        by_parent.setdefault(run.parent_task_run_id, []).append(index)
        if run.state in _SUCCEEDED:
            self._outputs = None  # a replay's seeded run
        self._writable.add(index)
        self.changed(index)
        return index

    def drop_task_runs(self, doomed: set[int]) -> None:
        """Forget task runs (a restart re-runs the errors and finally branches afresh).

        Only before any task run changed in this step: indexes shift.
        """
        assert all(key == _EXECUTION for key in self._changed), "drop before changes"
        runs = self.execution.task_runs
        self.execution.task_runs = [run for i, run in enumerate(runs) if i not in doomed]
        self._writable.clear()
        self._by_id = self._by_key = self._by_parent = None
        self._outputs = None
        self.lanes, self.dirty = {}, {}

    def set_execution_state(self, state: State) -> None:
        execution = self.execution
        # Every end gives back the flow's slot, if one was asked for: the one place where
        # an execution ends, so no end (kill, denial, failure) can forget it.
        release = state.is_terminal and claim_open(execution.histories)
        execution.state = state
        execution.histories.append(StateChange(state, self.now))
        if state.is_terminal:
            execution.timers.clear()  # nothing is waited for any more: keep idle state small
        if release:
            self._release_slot()
        self.changed(_EXECUTION)

    def queue_for_slot(self) -> None:
        """QUEUED until the flow's concurrency slot is granted: ask for it."""
        self.set_execution_state(State.QUEUED)
        request = slot_request(self.execution, self.flow, SlotRequestKind.ACQUIRE, self.now)
        self._commands.append(RequestSlot(request))

    def _release_slot(self) -> None:
        # Counted after the QUEUED entries: same claim number as its ACQUIRE.
        request = slot_request(self.execution, self.flow, SlotRequestKind.RELEASE, self.now)
        self._commands.append(RequestSlot(request))

    def set_task_run_state(self, index: int, state: State) -> None:
        task_run = self.task_run(index)
        was_visible = task_run.state in _SUCCEEDED or outputs_visible_while_running(task_run)
        task_run.state = state
        if was_visible or state in _SUCCEEDED or outputs_visible_while_running(task_run):
            self._outputs = None  # its outputs appear in (or leave) `{{ outputs }}`
        task_run.histories.append(StateChange(state, self.now))
        self.changed(index)

    def set_timer(self, timer: Timer) -> None:
        self.execution.timers.append(timer)
        self._commands.append(SetTimer(self.execution.id, timer))

    def remove_timer(self, kind: TimerKind, task_run_id: str, attempt: int) -> None:
        timers = self.execution.timers
        for i, timer in enumerate(timers):
            if timer.kind is kind and timer.task_run_id == task_run_id and timer.attempt == attempt:
                del timers[i]
                return

    def remove_timers_of(self, task_run_id: str) -> None:
        self.execution.timers = [t for t in self.execution.timers if t.task_run_id != task_run_id]

    def log(self, level: LogLevel, message: str, index: int | None, attempt: int | None) -> None:
        self._logs.append((level, message, index, attempt))

    def emit(self, command: Command) -> None:
        self._commands.append(command)

    def finish(self) -> Step:
        execution = self.execution
        now = self.now
        commands: list[Command] = []
        if self._changed:
            # One event for the whole step (the executor splits a huge one by size).
            execution.seq += 1
            runs = execution.task_runs
            commands.append(
                PublishEvent(
                    messages.ExecutionEvent(
                        execution.id,
                        execution.seq,
                        now,
                        execution=execution.snapshot() if _EXECUTION in self._changed else None,
                        task_runs=[runs[i].snapshot(i) for i in self._changed if i != _EXECUTION],
                    )
                )
            )
        for ordinal, (level, message, index, attempt) in enumerate(self._logs):
            task_run = None if index is None else execution.task_runs[index]
            commands.append(
                EmitLog(
                    messages.LogRecord(
                        # Every step that logs also changes something, so it publishes
                        # an event and its seq is unique to it.
                        id=log_id(execution.id, execution.seq, ordinal),
                        execution_id=execution.id,
                        namespace=execution.namespace,
                        flow_id=execution.flow_id,
                        time=now,
                        level=level,
                        message=message,
                        task_run_id=None if task_run is None else task_run.id,
                        task_id=None if task_run is None else task_run.task_id,
                        attempt=attempt,
                    )
                )
            )
        commands += self._commands
        carry = self._carry
        if carry is not None:
            index = self._by_id, self._by_key, self._by_parent
            carry.execution = execution
            carry.index = None if self._by_id is None else index  # type: ignore[assignment]
            carry.lanes, carry.dirty = self.lanes, self.dirty
        return Step(execution, commands)


def _shallow_copy(execution: Execution) -> Execution:
    return Execution(
        id=execution.id,
        namespace=execution.namespace,
        flow_id=execution.flow_id,
        flow_revision=execution.flow_revision,
        inputs=execution.inputs,
        labels=execution.labels,
        trigger=execution.trigger,
        state=execution.state,
        histories=list(execution.histories),
        task_runs=list(execution.task_runs),
        outputs=execution.outputs,
        seq=execution.seq,
        timers=list(execution.timers),
        created_at=execution.created_at,
        applied=execution.applied,  # replaced, never mutated
    )
