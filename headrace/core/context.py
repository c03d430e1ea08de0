"""The variables a task's expressions see (`{{ inputs.x }}`, `{{ outputs.a.y }}`, ...).

Like Kestra: inside a for-each, `{{ taskrun.value }}` is the current item and
`{{ parents }}` the enclosing loops' items (closest first, `parent` is the first);
outputs of task runs that carry a value are keyed by it (`outputs.task[value].key`).
`vars` are the flow's `variables`, rendered in declaration order with the same context
(each sees the ones before it). `now()` is the time of the event being processed: the
core never reads the clock, so replaying events renders the same text.

`secret()` markers need entropy the core cannot draw: the executor's shell wraps each
`advance` call in `secret_seed(random text)`, and an attempt's properties render with a
`SecretScope` whose nonce derives from that seed (see `headrace.secret_markers`). The
seed is an input like `now`, ambient so that it need not be threaded through every event
handler; without one (tests that do not set it), `secret()` in task properties fails.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from headrace.core.state import Execution, TaskRun
from headrace.expressions import NOW_KEY, render_variables
from headrace.flow.model import Task
from headrace.secret_markers import SCOPE_KEY, SecretScope
from headrace.states import State

_secret_seed: ContextVar[str] = ContextVar("headrace_secret_seed", default="")


@contextmanager
def secret_seed(seed: str) -> Iterator[None]:
    """Render the secret markers of `advance` calls made inside with `seed`: random text,
    fresh for each call, that nobody outside the executor sees."""
    token = _secret_seed.set(seed)
    try:
        yield
    finally:
        _secret_seed.reset(token)


def current_secret_seed() -> str:
    return _secret_seed.get()


_SUCCEEDED = (State.SUCCESS, State.WARNING)


def _loop_values(run: TaskRun, by_id: Mapping[str, TaskRun]) -> list[str]:
    """The for-each items a task run sits in, outermost first.

    The task runs of one loop iteration (the for-each's direct children) carry the
    iteration's index and item: each of them up the parent chain is one loop.
    """
    values: list[str] = []
    current: TaskRun | None = run
    while current is not None:
        if current.iteration is not None and current.value is not None:
            values.append(current.value)
        parent = current.parent_task_run_id
        current = by_id.get(parent) if parent is not None else None
    return values[::-1]


def render_context(
    execution: Execution,
    task_run: TaskRun | None,
    attempt: int,
    *,
    now: datetime,
    variables: Mapping[str, Any] | None = None,
    parents: list[str] | None = None,
    secrets: SecretScope | None = None,
    outputs: Mapping[str, Any] | None = None,
    task: Task | None = None,
    iteration: int | None = None,
) -> dict[str, Any]:
    """The context for `task_run` (None: the execution itself, for flow outputs).

    `secrets`: only when rendering an attempt's task properties (`secret()` records
    names there, and its markers can resolve). `outputs`: `task_outputs(execution)`,
    when the caller has it already. Raises `ExpressionError` when a variable does not
    render.
    """
    context: dict[str, Any] = {
        "inputs": execution.inputs,
        "outputs": task_outputs(execution) if outputs is None else outputs,
        "execution": {
            "id": execution.id,
            "startDate": execution.created_at.isoformat(),
            "state": str(execution.state),
            # Kestra's: the first execution of a retry chain (itself when none).
            "originalId": execution.trigger.get("originalId", execution.id),
        },
        "flow": {
            "id": execution.flow_id,
            "namespace": execution.namespace,
            "revision": execution.flow_revision,
            "tenantId": "main",  # Kestra's one tenant (headrace has only this one)
        },
        # Scripts run in their working directory: Kestra's paths are `.` there (files
        # in `outputDir` are kept only when `outputFiles` lists them).
        "workingDir": ".",
        "outputDir": ".",
        "labels": execution.labels,
        "trigger": execution.trigger,
        NOW_KEY: now,
    }
    if task_run is not None:
        context["taskrun"] = {
            "id": task_run.id,
            "attempt": attempt,
            "attemptsCount": attempt - 1,  # Kestra's: attempts before this one
            "value": task_run.value,
            "iteration": iteration,
            "parentId": task_run.parent_task_run_id,
            "startDate": task_run.histories[0].date.isoformat() if task_run.histories else None,
        }
        if task is not None:
            context["task"] = {"id": task.id, "type": task.type}
        loops = [{"taskrun": {"value": value}} for value in parents or []]
        context["parents"] = loops
        context["parent"] = loops[0] if loops else None
    if secrets is not None:
        context[SCOPE_KEY] = secrets  # before `vars`: a variable may hold a secret()
    context["vars"] = render_variables(variables, context) if variables else {}
    return context


def outputs_visible_while_running(run: TaskRun) -> bool:
    """A resumed pause running its own tasks (Kestra's `tasks` of a Pause): they read its
    `onResume` outputs while it is RUNNING."""
    return run.state is State.RUNNING and "resumed" in run.outputs


SCRIPT_TYPES = frozenset({"shell", "shell.script", "python", "python.commands"})
"""Task types whose printed values (`::{"outputs": …}::`) Kestra reads under `vars`."""
_NOT_VARS = frozenset({"exitCode", "outputFiles", "vars"})


def task_outputs(execution: Execution, scripts: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`{{ outputs }}`: the outputs of every succeeded task run, keyed by task id (and by
    for-each item inside loops). Costs a pass over every task run. The tasks of
    `scripts` (ids) also show their printed values under `vars`, where Kestra reads them
    (`outputs.<task>.vars.<key>`)."""
    outputs: dict[str, Any] = {}
    by_id = {run.id: run for run in execution.task_runs}
    for run in execution.task_runs:
        if run.state not in _SUCCEEDED and not outputs_visible_while_running(run):
            continue
        own = run.outputs
        if run.task_id in scripts and "vars" not in own:
            own = {**own, "vars": {k: v for k, v in own.items() if k not in _NOT_VARS}}
        values = _loop_values(run, by_id)
        if not values:
            outputs[run.task_id] = own
            continue
        # Inside nested loops, one level per loop: `outputs.task[outer][inner]`.
        node = outputs.setdefault(run.task_id, {})
        for value in values[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(value, {})
        if isinstance(node, dict):
            node[values[-1]] = own
    return outputs
