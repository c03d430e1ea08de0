"""Flowable task types in the loader: nested tasks validated with their paths."""

from __future__ import annotations

import pytest

from headrace.flow import FlowValidationError, load_flow

HEAD = "id: f\nnamespace: company.team\ntasks:\n"


def problems(body: str) -> list[tuple[str, str]]:
    with pytest.raises(FlowValidationError) as info:
        load_flow(HEAD + body)
    return [(error.path, error.message) for error in info.value.errors]


def test_nested_tasks_load_with_kestra_aliases_normalised():
    flow = load_flow(
        HEAD + "  - id: s\n    type: io.kestra.plugin.core.flow.Sequential\n    tasks:\n"
        "      - id: a\n        type: io.kestra.plugin.core.log.Log\n        message: hi\n"
    )
    assert flow.tasks[0].type == "flow.sequential"


def test_a_bad_nested_task_is_reported_at_its_path():
    found = problems(
        "  - id: check\n    type: flow.if\n    condition: true\n    then:\n"
        "      - id: ok\n        type: log\n        message: x\n"
        "      - id: bad\n        type: nope\n"
    )
    assert found[0][0] == "tasks[0].then[1].type"
    assert "unknown task type 'nope'" in found[0][1]


def test_task_ids_are_unique_across_the_tree():
    found = problems(
        "  - id: a\n    type: log\n    message: x\n"
        "  - id: p\n    type: flow.parallel\n    tasks:\n"
        "      - id: a\n        type: log\n        message: y\n"
    )
    assert ("tasks[1].tasks[0].id", "duplicate task id 'a'") in found


def test_dag_cycles_and_unknown_dependencies_are_refused():
    found = problems(
        "  - id: d\n    type: flow.dag\n    tasks:\n"
        "      - task: {id: a, type: log, message: x}\n        dependsOn: [b]\n"
        "      - task: {id: b, type: log, message: x}\n        dependsOn: [a, zz]\n"
    )
    paths = dict(found)
    assert paths["tasks[0].tasks[1].dependsOn[1]"] == "unknown task 'zz' in this dag"
    assert paths["tasks[0].tasks[0].dependsOn"] == "dependency cycle: a -> b -> a"


def test_flowable_properties_are_checked():
    found = problems(
        "  - id: e\n    type: flow.foreach\n    values: [1]\n    concurrencyLimit: -1\n    tasks: []\n"
    )
    assert {path for path, _ in found} == {"tasks[0].concurrencyLimit", "tasks[0].tasks"}


FLOWABLES = {
    "flow.sequential": "    tasks: [{id: a, type: log, message: x}]\n",
    "flow.parallel": "    tasks: [{id: a, type: log, message: x}]\n",
    "flow.dag": "    tasks: [{task: {id: a, type: log, message: x}}]\n",
    "flow.if": "    condition: true\n    then: [{id: a, type: log, message: x}]\n",
    "flow.switch": "    value: x\n    cases: {x: [{id: a, type: log, message: x}]}\n",
    "flow.foreach": "    values: [1]\n    tasks: [{id: a, type: log, message: x}]\n",
    "io.kestra.plugin.core.flow.Subflow": "    namespace: company.team\n    flowId: other\n",
    "flow.pause": "    delay: PT1M\n",
    "flow.fail": "",
}


@pytest.mark.parametrize("task_type", sorted(set(FLOWABLES) - {"flow.pause"}))
def test_timeout_on_a_flowable_task_is_refused_where_written_and_retry_is_taken(task_type):
    # Kestra takes `retry` on flowables (a Fail or Subflow is retried itself, a container's
    # retry is its children's default: headrace.core.retries); `timeout` stays refused.
    body = (
        f"  - id: t\n    type: {task_type}\n{FLOWABLES[task_type]}"
        "    retry: {type: constant, interval: PT1S, maxAttempts: 3}\n"
        "    timeout: PT1M\n"
    )
    with pytest.raises(FlowValidationError) as info:
        load_flow(HEAD + body, "flow.yaml")
    (timeout,) = info.value.errors
    assert timeout.path == "tasks[0].timeout"
    assert timeout.line == body.count("\n") + 3
    assert "does not take `timeout`: only worker tasks are timed out" in timeout.message
    assert timeout.hint
    assert str(info.value).startswith(f"flow.yaml:{timeout.line}:")
    retried = load_flow(HEAD + body.replace("    timeout: PT1M\n", ""), "flow.yaml")
    assert retried.tasks[0].retry is not None and retried.tasks[0].retry.max_attempts == 3


def test_retry_and_timeout_stay_allowed_on_worker_tasks_inside_a_flowable():
    flow = load_flow(
        HEAD + "  - id: p\n    type: flow.parallel\n    tasks:\n"
        "      - {id: a, type: log, message: x, timeout: PT1M,"
        " retry: {type: constant, interval: PT1S, maxAttempts: 2}}\n"
    )
    assert flow.tasks[0].retry is None
