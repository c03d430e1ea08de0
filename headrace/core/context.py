"""The variables a task's expressions see (`{{ inputs.x }}`, `{{ outputs.a.y }}`, ...)."""

from __future__ import annotations

from typing import Any

from headrace.core.state import Execution, TaskRun
from headrace.states import State

_SUCCEEDED = (State.SUCCESS, State.WARNING)


def render_context(execution: Execution, task_run: TaskRun, attempt: int) -> dict[str, Any]:
    return {
        "inputs": execution.inputs,
        "outputs": {
            run.task_id: run.outputs for run in execution.task_runs if run.state in _SUCCEEDED
        },
        "execution": {"id": execution.id, "startDate": execution.created_at.isoformat()},
        "flow": {
            "id": execution.flow_id,
            "namespace": execution.namespace,
            "revision": execution.flow_revision,
        },
        "labels": execution.labels,
        "trigger": execution.trigger,
        "taskrun": {"id": task_run.id, "attempt": attempt},
    }
