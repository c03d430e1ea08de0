"""The variables a task's expressions see (`{{ inputs.x }}`, `{{ outputs.a.y }}`, ...).

Like Kestra: inside a for-each, `{{ taskrun.value }}` is the current item and
`{{ parents }}` the enclosing loops' items (closest first, `parent` is the first);
outputs of task runs that carry a value are keyed by it (`outputs.task[value].key`).
`vars` are the flow's `variables`, rendered with the same context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from headrace.core.state import Execution, TaskRun
from headrace.expressions import render_value
from headrace.states import State

_SUCCEEDED = (State.SUCCESS, State.WARNING)


def render_context(
    execution: Execution,
    task_run: TaskRun | None,
    attempt: int,
    *,
    variables: Mapping[str, Any] | None = None,
    parents: list[str] | None = None,
) -> dict[str, Any]:
    """The context for `task_run` (None: the execution itself, for flow outputs).

    Raises `ExpressionError` when a variable does not render.
    """
    outputs: dict[str, Any] = {}
    for run in execution.task_runs:
        if run.state not in _SUCCEEDED:
            continue
        if run.value is None:
            outputs[run.task_id] = run.outputs
        else:
            by_value = outputs.setdefault(run.task_id, {})
            if isinstance(by_value, dict):
                by_value[run.value] = run.outputs
    context: dict[str, Any] = {
        "inputs": execution.inputs,
        "outputs": outputs,
        "execution": {"id": execution.id, "startDate": execution.created_at.isoformat()},
        "flow": {
            "id": execution.flow_id,
            "namespace": execution.namespace,
            "revision": execution.flow_revision,
        },
        "labels": execution.labels,
        "trigger": execution.trigger,
    }
    if task_run is not None:
        context["taskrun"] = {
            "id": task_run.id,
            "attempt": attempt,
            "value": task_run.value,
            "parentId": task_run.parent_task_run_id,
        }
        loops = [{"taskrun": {"value": value}} for value in parents or []]
        context["parents"] = loops
        context["parent"] = loops[0] if loops else None
    if variables:
        context["vars"] = render_value(dict(variables), context, "variables")
    else:
        context["vars"] = {}
    return context
