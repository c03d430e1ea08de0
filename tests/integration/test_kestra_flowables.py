"""Kestra's core flowable tasks, written as a Kestra user writes them, run end to end:
REST API -> Kafka -> executor -> workers -> indexer -> PostgreSQL (issue #13, item 1)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.local import LocalStack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.kestra"

LOOPS = """\
id: loops
namespace: tests.kestra
tasks:
  - id: each_sequential
    type: io.kestra.plugin.core.flow.EachSequential
    value: '["a", "b", "a"]'
    tasks:
      - id: seq_value
        type: io.kestra.plugin.core.debug.Return
        format: "seq {{ taskrun.value }}"
  - id: each_parallel
    type: io.kestra.core.tasks.flows.EachParallel
    value: ["x", "y"]
    concurrent: 2
    tasks:
      - id: par_one
        type: io.kestra.plugin.core.debug.Return
        format: "one {{ taskrun.value }}"
      - id: par_two
        type: io.kestra.plugin.core.debug.Return
        format: "two {{ taskrun.value }}"
  - id: parallel
    type: io.kestra.plugin.core.flow.Parallel
    concurrent: 0
    tasks:
      - id: left
        type: io.kestra.plugin.core.debug.Return
        format: "{{ outputs.seq_value['b'].value }}"
      - id: right
        type: io.kestra.plugin.core.debug.Return
        format: "{{ outputs.par_two['y'].value }}"
"""

FAILURES = """\
id: failures
namespace: tests.kestra
tasks:
  - id: allowed
    type: io.kestra.plugin.core.flow.AllowFailure
    tasks:
      - id: ko
        type: io.kestra.plugin.scripts.shell.Commands
        commands:
          - exit 1
      - id: never
        type: io.kestra.plugin.core.debug.Return
        format: not reached
  - id: guarded
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - id: fail
        type: io.kestra.plugin.core.execution.Fail
        condition: "{{ true }}"
        errorMessage: on purpose
    errors:
      - id: caught
        type: io.kestra.plugin.core.debug.Return
        format: caught
    finally:
      - id: cleanup
        type: io.kestra.plugin.core.debug.Return
        format: cleanup
"""

APPROVAL = """\
id: approval
namespace: tests.kestra
tasks:
  - id: wait_for_approval
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: approved
        type: BOOLEAN
        defaults: true
      - id: reason
        type: STRING
  - id: report
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.wait_for_approval.onResume.reason }}"
"""

TIMED_OUT = """\
id: timed-out
namespace: tests.kestra
tasks:
  - id: pause
    type: io.kestra.plugin.core.flow.Pause
    pauseDuration: PT0.3S
    behavior: WARN
  - id: after
    type: io.kestra.plugin.core.debug.Return
    format: "{{ outputs.pause.resumed.to }}"
"""

CHILD = """\
id: child
namespace: tests.kestra
tasks:
  - id: produce
    type: io.kestra.plugin.core.debug.Return
    format: "n={{ inputs.n }}"
inputs:
  - id: n
    type: INT
"""

PARENT = """\
id: parent
namespace: tests.kestra
labels:
  team: data
tasks:
  - id: call
    type: io.kestra.core.tasks.flows.Subflow
    namespace: tests.kestra
    flowId: child
    inheritLabels: true
    inputs:
      n: 21
    outputs:
      got: "{{ outputs.produce.value }}"
  - id: report
    type: io.kestra.plugin.core.debug.Return
    format: "child said {{ outputs.call.outputs.got }}"
"""


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    asyncio.run(migrate_url(settings.database_url))
    stack_settings = dataclasses.replace(settings, gateway_port=free_port())
    stack = LocalStack(stack_settings, log_dir=tmp_path_factory.mktemp("kestra-stack-logs"))
    try:
        stack.start()
        client = ApiClient(stack.url, timeout_s=60)
        for source in (LOOPS, FAILURES, APPROVAL, TIMED_OUT, CHILD, PARENT):
            flow_id = source.split("\n", 1)[0].removeprefix("id: ")
            client.request(
                "PUT",
                f"/flows/{NAMESPACE}/{flow_id}",
                body=source.encode(),
                content_type="application/x-yaml",
            )
        yield client
    finally:
        stack.stop()


def run(api: ApiClient, flow_id: str, **inputs: object) -> dict:
    return api.request(
        "POST",
        f"/executions/{NAMESPACE}/{flow_id}",
        params={"wait": "true", "timeout": "60"},
        json_body=inputs,
    )


def runs_of(execution: dict) -> dict[tuple[str, str | None], dict]:
    return {(r["taskId"], r.get("value")): r for r in execution["taskRunList"]}


def current(api: ApiClient, execution_id: str) -> str | None:
    """The indexed state of the execution; None before the indexer has it."""
    try:
        return api.request("GET", f"/executions/{execution_id}")["state"]["current"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def state(run: dict) -> str:
    return run["state"]["current"]


def test_each_loops_and_parallel_run_with_kestras_values_and_outputs(api: ApiClient) -> None:
    execution = run(api, "loops")
    assert execution["state"]["current"] == "SUCCESS"
    runs = runs_of(execution)
    # EachSequential runs each distinct value once; EachParallel every task of each value.
    assert sorted(k for k in runs if k[0] == "seq_value") == [
        ("seq_value", "a"),
        ("seq_value", "b"),
    ]
    assert sorted(k for k in runs if k[0].startswith("par_")) == [
        ("par_one", "x"),
        ("par_one", "y"),
        ("par_two", "x"),
        ("par_two", "y"),
    ]
    assert runs[("left", None)]["outputs"] == {"value": "seq b"}
    assert runs[("right", None)]["outputs"] == {"value": "two y"}


def test_allow_failure_warns_and_a_flowables_errors_and_finally_run(api: ApiClient) -> None:
    execution = run(api, "failures")
    runs = runs_of(execution)
    assert state(runs[("allowed", None)]) == "WARNING" and state(runs[("ko", None)]) == "FAILED"
    assert ("never", None) not in runs
    assert state(runs[("guarded", None)]) == "FAILED"
    assert (
        state(runs[("caught", None)]) == "SUCCESS" and state(runs[("cleanup", None)]) == "SUCCESS"
    )
    assert runs[("caught", None)]["parentTaskRunId"] == runs[("guarded", None)]["id"]
    assert execution["state"]["current"] == "FAILED"


def test_pause_on_resume_inputs_are_checked_then_read_downstream(api: ApiClient) -> None:
    started = api.request("POST", f"/executions/{NAMESPACE}/approval")
    execution_id = started["id"]
    wait_until(lambda: current(api, execution_id) == "PAUSED", what="the pause")
    with pytest.raises(ApiError) as refused:
        api.request("POST", f"/executions/{execution_id}/resume", json_body={"approved": "maybe"})
    assert refused.value.status == 409
    assert "'reason': required" in refused.value.message
    # Kestra's clients resume with a multipart form.
    boundary = "kestra-boundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="approved"\r\n\r\nfalse\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="reason"\r\n\r\nlooks good\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    answer = api.request(
        "POST",
        f"/executions/{execution_id}/resume",
        body=form,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert answer["outcome"] == "APPLIED"

    wait_until(lambda: current(api, execution_id) == "SUCCESS", what="the resumed end")
    execution = api.request("GET", f"/executions/{execution_id}")
    runs = runs_of(execution)
    pause = runs[("wait_for_approval", None)]
    assert pause["outputs"]["onResume"] == {"approved": False, "reason": "looks good"}
    assert runs[("report", None)]["outputs"] == {"value": "looks good"}


def test_pause_duration_ends_as_its_behavior_says(api: ApiClient) -> None:
    execution = run(api, "timed-out")
    runs = runs_of(execution)
    assert state(runs[("pause", None)]) == "WARNING"
    assert runs[("after", None)]["outputs"] == {"value": "WARNING"}
    assert execution["state"]["current"] == "WARNING"


def test_subflow_outputs_and_inherited_labels(api: ApiClient) -> None:
    execution = run(api, "parent")
    assert execution["state"]["current"] == "SUCCESS"
    call = runs_of(execution)[("call", None)]
    assert call["outputs"]["outputs"] == {"got": "n=21"}
    assert runs_of(execution)[("report", None)]["outputs"] == {"value": "child said n=21"}
    child = api.request("GET", f"/executions/{call['outputs']['executionId']}")
    labels = child["labels"]
    labels = labels if isinstance(labels, dict) else {i["key"]: i["value"] for i in labels}
    assert labels.get("team") == "data"
