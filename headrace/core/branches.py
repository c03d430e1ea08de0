"""Which task runs next in a sequential flow: `tasks`, then `errors`, then `finally`.

Kestra's semantics, kept simple and spelled out here because users rely on them:

- The main `tasks` run in sequence; the first one that FAILS (after its retries) ends
  the main branch.
- Then, only if a main task failed, the `errors` tasks run in sequence. An errors task
  that fails stops the errors branch (the rest of it is skipped, and logged).
- Then, whatever happened before, the `finally` tasks run in sequence. A finally task
  that fails stops the finally branch too.
- The execution stays RUNNING throughout and ends FAILED if any task run failed (so a
  failed main task always fails the execution, whatever the errors branch does, and a
  failed finally task fails an otherwise successful execution), else WARNING if any
  task run ended WARNING, else SUCCESS.

A task's *position* is its index in `Flow.all_tasks()` (`tasks`, `errors`, `finally`
concatenated): it names the task for ids (`ids.task_run_id`) and for the order. Task ids
are unique across the three lists, so a task run's `task_id` gives its position back.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from headrace.core.state import TaskRun
from headrace.flow.model import Flow, Task
from headrace.states import State


class Branch(StrEnum):
    MAIN = "tasks"
    ERRORS = "errors"
    FINALLY = "finally"


def task_at(flow: Flow, position: int) -> Task:
    """The task at `position` of `flow.all_tasks()`, without building that list."""
    for tasks in (flow.tasks, flow.errors, flow.finally_):
        if position < len(tasks):
            return tasks[position]
        position -= len(tasks)
    raise IndexError(position)


def position_of(flow: Flow, task_id: str) -> int:
    """The position of the task with id `task_id`; KeyError if the flow has none.

    A linear scan: flows have tens of tasks, and rendering a task's properties costs far
    more than this.
    """
    position = 0
    for tasks in (flow.tasks, flow.errors, flow.finally_):
        for task in tasks:
            if task.id == task_id:
                return position
            position += 1
    raise KeyError(task_id)


def branch_of(flow: Flow, position: int) -> Branch:
    main, errors = len(flow.tasks), len(flow.errors)
    if position < main:
        return Branch.MAIN
    if position < main + errors:
        return Branch.ERRORS
    return Branch.FINALLY


def branch_end(flow: Flow, branch: Branch) -> int:
    """The position just past the last task of `branch`."""
    end = len(flow.tasks)
    if branch is Branch.MAIN:
        return end
    end += len(flow.errors)
    if branch is Branch.ERRORS:
        return end
    return end + len(flow.finally_)


def next_position(flow: Flow, position: int, failed: bool) -> int | None:
    """The task to start once the task at `position` has ended; None when nothing is left."""
    branch = branch_of(flow, position)
    end = branch_end(flow, branch)
    if not failed and position + 1 < end:
        return position + 1  # the next task of the same branch
    if branch is Branch.MAIN and failed and flow.errors:
        return end  # the first errors task
    if branch is not Branch.FINALLY and flow.finally_:
        return branch_end(flow, Branch.ERRORS)  # the first finally task
    return None


def final_state(task_runs: Iterable[TaskRun]) -> State:
    """The execution's end state once no task is left to run."""
    warned = False
    for run in task_runs:
        if run.state is State.FAILED:
            return State.FAILED
        warned = warned or run.state is State.WARNING
    return State.WARNING if warned else State.SUCCESS
