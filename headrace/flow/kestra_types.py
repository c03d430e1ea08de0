"""Kestra's core task types that headrace does not run, each with why and what to use
instead: the loader's error for such a type says so rather than "unknown task type".

Kestra's core types that headrace runs are aliases of headrace's own (connectors'
`aliases`, `model.FLOWABLE_TYPE_ALIASES`); docs/kestra.md lists both.
"""

from __future__ import annotations

_API = "call headrace's REST API with `http.request` (docs/api.md)"
_NO_KV = (
    "headrace has no key-value store: pass values to later tasks with outputs, to later"
    " executions with namespace files or a database table"
)

NOT_RUN: dict[str, str] = {
    "io.kestra.plugin.core.kv.Set": _NO_KV,
    "io.kestra.plugin.core.kv.Get": _NO_KV,
    "io.kestra.plugin.core.kv.GetKeys": _NO_KV,
    "io.kestra.plugin.core.kv.Delete": _NO_KV,
    "io.kestra.plugin.core.kv.PurgeKV": _NO_KV,
    "io.kestra.plugin.core.state.Set": _NO_KV,
    "io.kestra.plugin.core.state.Get": _NO_KV,
    "io.kestra.plugin.core.state.Delete": _NO_KV,
    "io.kestra.plugin.core.execution.Count": f"counting executions is an API query: {_API}",
    "io.kestra.plugin.core.execution.Resume": f"to resume another execution, {_API}",
    "io.kestra.plugin.core.execution.Kill": f"to kill an execution, {_API}",
    "io.kestra.plugin.core.execution.PurgeExecutions": (
        "executions are kept for HEADRACE_EXECUTION_RETENTION and swept by the services"
    ),
    "io.kestra.plugin.core.execution.SetVariables": (
        "an execution's variables are fixed when it starts: pass values with outputs"
        " (`output.values`)"
    ),
    "io.kestra.plugin.core.execution.UnsetVariables": (
        "an execution's variables are fixed when it starts: pass values with outputs"
    ),
    "io.kestra.plugin.core.log.Fetch": (
        "a task cannot read the log store: read logs with `headrace logs` or GET /api/v1/logs"
    ),
    "io.kestra.plugin.core.log.PurgeLogs": (
        "logs are kept for HEADRACE_EXECUTION_RETENTION and swept by the services"
    ),
    "io.kestra.plugin.core.storage.Delete": (
        "stored files are removed with their execution after HEADRACE_EXECUTION_RETENTION"
    ),
    "io.kestra.plugin.core.storage.PurgeCurrentExecutionFiles": (
        "stored files are removed with their execution after HEADRACE_EXECUTION_RETENTION"
    ),
    "io.kestra.plugin.core.storage.Split": (
        "split files in a script task (`python` with `inputFiles` and `outputFiles`)"
    ),
    "io.kestra.plugin.core.storage.Reverse": "reverse files in a script task (`python`)",
    "io.kestra.plugin.core.storage.FilterItems": (
        "headrace stores JSON Lines, not Ion: filter in a script task (`python`)"
    ),
    "io.kestra.plugin.core.storage.DeduplicateItems": (
        "headrace stores JSON Lines, not Ion: deduplicate in a script task (`python`)"
    ),
    "io.kestra.plugin.core.storage.LocalFiles": (
        "removed from Kestra: use `inputFiles`/`outputFiles` of a script task"
    ),
    "io.kestra.plugin.core.flow.ForEachItem": (
        "split the file in a script task, then call the subflow per part with"
        " `flow.foreach` and `flow.subflow`"
    ),
    "io.kestra.plugin.core.flow.WaitFor": (
        "loop with a `retry` on a task that fails until the condition holds"
    ),
    "io.kestra.plugin.core.templating.TemplatedTask": (
        "a task's type and properties are fixed in the flow: use `flow.switch` over the variants"
    ),
    "io.kestra.plugin.core.trigger.Toggle": (
        "switch triggers with `headrace trigger enable|disable` or"
        " PUT /api/v1/triggers/{namespace}/{flowId}/{triggerId}"
    ),
    "io.kestra.plugin.core.metric.Publish": (
        "tasks publish no custom metrics; the services' /metrics cover executions and tasks"
    ),
    "io.kestra.plugin.core.http.Download": (
        "fetch the file in a script task and list it in `outputFiles`"
    ),
}


# Kestra's names before 0.17 (still accepted by Kestra as aliases) -> today's.
_RENAMED_PREFIXES = {
    "io.kestra.core.tasks.flows.": "io.kestra.plugin.core.flow.",
    "io.kestra.core.tasks.log.": "io.kestra.plugin.core.log.",
    "io.kestra.core.tasks.states.": "io.kestra.plugin.core.state.",
    "io.kestra.core.tasks.storages.": "io.kestra.plugin.core.storage.",
    "io.kestra.core.tasks.templating.": "io.kestra.plugin.core.templating.",
    "io.kestra.core.tasks.trigger.": "io.kestra.plugin.core.trigger.",
    "io.kestra.core.tasks.executions.": "io.kestra.plugin.core.execution.",
    "io.kestra.plugin.fs.http.": "io.kestra.plugin.core.http.",
}


def why_not_run(task_type: str) -> str | None:
    """Why headrace does not run Kestra's `task_type` (today's name or its name before
    Kestra 0.17), and what to use instead; None for any other type."""
    for old, new in _RENAMED_PREFIXES.items():
        if task_type.startswith(old):
            task_type = new + task_type.removeprefix(old)
            break
    return NOT_RUN.get(task_type)
