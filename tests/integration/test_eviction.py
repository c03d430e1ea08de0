"""An ended execution leaves the executor's table after the retention window, through the
stack's own timers, and what is left still answers for it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import put_flows, running_stack_on_own_broker
from tests.integration.waiting import wait_until

NAMESPACE = "tests.eviction"
FLOW = f"""\
id: quick
namespace: {NAMESPACE}
tasks:
  - id: say
    type: log
    message: done
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack_on_own_broker(
        settings, tmp_path_factory, "eviction-logs", execution_retention=timedelta(seconds=10)
    ) as stack:
        yield stack


def resume_refusal(api: ApiClient, execution_id: str) -> str:
    with pytest.raises(ApiError) as refused:
        api.request("POST", f"/executions/{execution_id}/resume", json_body={})
    assert refused.value.status == 409
    return str(refused.value)


def test_an_ended_execution_is_evicted_and_its_tombstone_answers(stack: LocalStack) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"quick": FLOW})
    execution_id = api.request("POST", f"/executions/{NAMESPACE}/quick?wait=true")["id"]
    # Held: the executor knows it ended.
    assert resume_refusal(api, execution_id).endswith("the execution is SUCCESS, not PAUSED")
    evicted = wait_until(
        lambda: "evicted" in (reason := resume_refusal(api, execution_id)) and reason,
        timeout_s=90,
        what="the executor to evict the ended execution",
    )
    assert "it can no longer be restarted, nor replayed from a task run" in evicted
    # The index keeps it: eviction is the executor's memory, not the user's history.
    execution = api.request("GET", f"/executions/{execution_id}")
    assert execution["state"]["current"] == "SUCCESS"
    assert [run["taskId"] for run in execution["taskRunList"]] == ["say"]

    # The tombstone is in the changelog: an executor that recovers the partition has it.
    (executor,) = [p for p in stack.processes if p.name == "executor"]
    executor.process.send_signal(signal.SIGKILL)
    executor.process.wait(10)
    stack.restart(executor)
    stack.wait_ready()
    assert "evicted" in resume_refusal(api, execution_id)
