"""A Kestra flow written in Pebble runs on the real services with Kestra's values.

The executor renders every expression (variables, task properties, a for-each's values,
flow outputs) with Pebble's operators, filters and printing; the values checked here
are the ones Kestra's documentation gives for the same inputs (see
tests/unit/test_pebble_expressions.py for the sources).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until

TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}

FLOW = """\
id: pebble
namespace: {namespace}
inputs:
  - id: optional
    type: STRING
    required: false
  - id: payload
    type: JSON
    defaults: '{{"name": "John Doe", "score": {{"English": 72, "Maths": 88}}, "years": [2020, 2023]}}'
variables:
  who: "{{{{ inputs.optional ?? inputs.payload.name | upper }}}}"
tasks:
  - id: total
    type: io.kestra.plugin.core.debug.Return
    format: "total={{{{ inputs.payload.score | values | jq('add') | first }}}}"
  - id: summary
    type: io.kestra.plugin.core.debug.Return
    format: >-
      {{{{ vars.who }}}} {{{{ outputs.total.value == 'total=160' ? 'passed' : 'failed' }}}}
      {{{{ inputs.payload.years | length }}}} {{{{ inputs.payload.score contains 'Maths' }}}}
      {{{{ inputs.optional }}}}|{{{{ 7 / 2 }}}}|{{{{ inputs.payload.score }}}}
      {{% for e in inputs.payload.score %}}{{{{ loop.index }}}}{{{{ e.key }}}}{{% endfor %}}
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: "{{{{ 1..3 }}}}"
    tasks:
      - id: square
        type: io.kestra.plugin.core.debug.Return
        format: "{{{{ taskrun.value }}}}^2={{{{ (taskrun.value | number) * (taskrun.value | number) }}}}"
outputs:
  - id: day
    type: STRING
    value: "{{{{ '2024-07-09T06:17:01.171193Z' | dateAdd(-1, 'DAYS') | date('EEE d MMM yyyy') }}}}"
"""


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    stack: LocalStack
    with running_stack(settings, tmp_path_factory, "pebble-logs") as stack:
        yield ApiClient(stack.url)


def ended(api: ApiClient, execution_id: str) -> dict | None:
    try:
        execution = api.request("GET", f"/executions/{execution_id}")
    except ApiError as exc:
        if exc.status == 404:  # not indexed yet
            return None
        raise
    return execution if execution["state"]["current"] in TERMINAL else None


def outputs(execution: dict, task_id: str) -> list[dict]:
    return [run["outputs"] for run in execution["taskRunList"] if run["taskId"] == task_id]


def test_a_pebble_flow_runs_with_kestras_values(api: ApiClient) -> None:
    namespace = f"test.pebble{uuid.uuid4().hex[:8]}"
    api.request(
        "PUT",
        f"/flows/{namespace}/pebble",
        body=FLOW.format(namespace=namespace).encode(),
        content_type="application/x-yaml",
    )
    started = api.request("POST", f"/executions/{namespace}/pebble", json_body={})
    execution = wait_until(lambda: ended(api, started["id"]), 120, "the execution's end")

    assert execution["state"]["current"] == "SUCCESS", json.dumps(execution)
    assert outputs(execution, "total") == [{"value": "total=160"}]
    (summary,) = outputs(execution, "summary")
    assert summary["value"] == (
        'JOHN DOE passed 2 true |3|{"English":72,"Maths":88} 0English1Maths'
    )
    assert sorted(o["value"] for o in outputs(execution, "square")) == ["1^2=1", "2^2=4", "3^2=9"]
    assert execution["outputs"] == {"day": "Mon 8 Jul 2024"}
