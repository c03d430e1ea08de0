"""Kestra's flow-level `retry`, end to end over the services (API -> Kafka -> executor ->
workers -> indexer -> PostgreSQL), with flows written with Kestra's type names and keys.

End states as Kestra's `RetryCaseTest` documents them: RETRY_FAILED_TASK retries the failed
task in place; CREATE_NEW_EXECUTION makes a chain of executions, maxAttempts in all, each
failed one ended (Kestra: RETRIED; headrace: FAILED) and the last FAILED.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from headrace.api_client import ApiClient
from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.local import LocalStack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.retry"

# Fails on its first two attempts: the flow's retry (no retry of its own) makes a third.
RETRY_FAILED_TASK = """\
id: flow-retry-in-place
namespace: tests.retry
retry:
  type: constant
  interval: PT0.1S
  maxAttempt: 3
  behavior: RETRY_FAILED_TASK
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: starting
  - id: flaky
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - 'test {{ taskrun.attempt }} -ge 3'
"""

CREATE_NEW_EXECUTION = """\
id: flow-retry-new-execution
namespace: tests.retry
labels:
  team: data
inputs:
  - id: who
    type: STRING
retry:
  type: constant
  interval: PT0.1S
  maxAttempts: 3
  behavior: CREATE_NEW_EXECUTION
tasks:
  - id: always
    type: io.kestra.plugin.core.execution.Fail
    message: "no luck for {{ inputs.who }}"
errors:
  - id: alert
    type: io.kestra.plugin.core.log.Log
    message: "alert for {{ execution.id }}"
"""


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    asyncio.run(migrate_url(settings.database_url))
    stack = LocalStack(
        dataclasses.replace(settings, gateway_port=free_port()),
        log_dir=tmp_path_factory.mktemp("retry-stack-logs"),
    )
    try:
        stack.start()
        yield ApiClient(stack.url, timeout_s=60)
    finally:
        stack.stop()


def put_flow(api: ApiClient, source: str, flow_id: str) -> None:
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )


def start(api: ApiClient, flow_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    return api.request(
        "POST",
        f"/executions/{NAMESPACE}/{flow_id}",
        params={"wait": "true", "timeout": "60"},
        json_body=inputs,
    )


def test_a_flow_retry_retries_the_failed_task_in_place(api: ApiClient) -> None:
    put_flow(api, RETRY_FAILED_TASK, "flow-retry-in-place")
    execution = start(api, "flow-retry-in-place", {})
    assert execution["state"]["current"] == "SUCCESS"
    runs = {run["taskId"]: run for run in execution["taskRunList"]}
    assert [a["state"]["current"] for a in runs["flaky"]["attempts"]] == [
        "FAILED",
        "FAILED",
        "SUCCESS",
    ]
    assert len(runs["hello"]["attempts"]) == 1  # what succeeded is not run again


def test_create_new_execution_chains_max_attempts_executions(api: ApiClient) -> None:
    put_flow(api, CREATE_NEW_EXECUTION, "flow-retry-new-execution")
    first = start(api, "flow-retry-new-execution", {"who": "kafka"})
    assert first["state"]["current"] == "FAILED"
    assert [run["taskId"] for run in first["taskRunList"]] == ["always"]  # no errors branch

    def chain() -> list[dict[str, Any]] | None:
        found = api.request(
            "GET",
            "/executions",
            params={"namespace": NAMESPACE, "flowId": "flow-retry-new-execution"},
        )["results"]
        ended = [e for e in found if e["state"]["current"] in ("FAILED", "SUCCESS")]
        return found if len(found) == 3 and len(ended) == 3 else None

    executions = wait_until(chain, timeout_s=60, what="three executions, all ended")
    by_attempt = {e["trigger"].get("attempt", 1): e for e in executions}
    assert sorted(by_attempt) == [1, 2, 3]
    assert by_attempt[1]["id"] == first["id"]
    for attempt in (2, 3):
        retried = by_attempt[attempt]
        assert retried["state"]["current"] == "FAILED"
        assert retried["trigger"]["originalId"] == first["id"]
        assert retried["trigger"]["retryOf"] == by_attempt[attempt - 1]["id"]
        assert retried["inputs"] == {"who": "kafka"}
        assert retried["labels"]["team"] == "data"
        assert retried["flowRevision"] == first["flowRevision"]
    # Only the last of the chain fails as a flow does without retry: its errors run.
    runs = {
        attempt: [
            run["taskId"] for run in api.request("GET", f"/executions/{e['id']}")["taskRunList"]
        ]
        for attempt, e in by_attempt.items()
    }
    assert runs == {1: ["always"], 2: ["always"], 3: ["always", "alert"]}
