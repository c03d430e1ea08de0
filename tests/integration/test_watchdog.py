"""Commands to executions the executor does not hold are answered, never dropped; the
watchdog finds executions that cannot progress and reports them (API, CLI, metrics).

A lost execution is made the way it happens: the index shows it (written by the
indexer's own code, as after an event the executor published), the executor holds no
state for it. The stack runs the watchdog every half second, on executions unchanged
for a second.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.db.indexing import write_batch
from headrace.local import LocalStack
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.states import State
from tests.integration.stacks import put_flows, run_cli, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.watchdog"
PAUSED = f"""\
id: paused
namespace: {NAMESPACE}
tasks:
  - id: wait
    type: flow.pause
  - id: after
    type: log
    message: resumed
"""
SLEEPY = f"""\
id: sleepy
namespace: {NAMESPACE}
tasks:
  - id: sleep
    type: shell
    commands: ["sleep 30"]
  - id: never
    type: log
    message: must not run
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(
        settings, tmp_path_factory, "watchdog-logs", watchdog_interval_s=0.5, watchdog_quiet_s=1.0
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"paused": PAUSED, "sleepy": SLEEPY})
    return api


def lose(settings: Settings, state: State) -> str:
    """An execution the index shows in `state` and the executor never held."""
    execution_id = f"lost{uuid.uuid4().hex[:18]}"
    now = datetime.now(UTC) - timedelta(minutes=5)  # quiet for a while already
    snapshot = ExecutionSnapshot(
        namespace=NAMESPACE,
        flow_id="paused",
        flow_revision=1,
        state=state,
        histories=[StateChange(State.CREATED, now), StateChange(state, now)],
        inputs={},
    )

    async def write() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await write_batch(conn, [ExecutionEvent(execution_id, 2, now, execution=snapshot)], [])
        finally:
            await conn.close()

    asyncio.run(write())
    return execution_id


def start(api: ApiClient, flow_id: str) -> str:
    return api.request("POST", f"/executions/{NAMESPACE}/{flow_id}", json_body={})["id"]


def state_of(api: ApiClient, execution_id: str) -> str | None:
    try:
        return api.request("GET", f"/executions/{execution_id}")["state"]["current"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def test_a_kill_right_after_the_start_is_applied(api: ApiClient) -> None:
    """The index may not show the execution yet: the executor, which holds it, decides."""
    execution_id = start(api, "sleepy")
    answer = api.request("POST", f"/executions/{execution_id}/kill")
    assert answer["outcome"] in ("APPLIED", "PENDING")
    wait_until(lambda: state_of(api, execution_id) == "KILLED", what="the kill to end it")


def test_a_command_the_state_does_not_allow_says_why(api: ApiClient) -> None:
    execution_id = start(api, "sleepy")
    wait_until(lambda: state_of(api, execution_id) == "RUNNING", what="it runs")
    with pytest.raises(ApiError) as refused:
        api.request("POST", f"/executions/{execution_id}/resume", json_body={})
    assert refused.value.status == 409
    assert str(refused.value).endswith("the execution is RUNNING, not PAUSED")
    api.request("POST", f"/executions/{execution_id}/kill")


def test_a_resume_of_a_lost_execution_is_refused_and_logged(
    settings: Settings, api: ApiClient
) -> None:
    execution_id = lose(settings, State.PAUSED)
    with pytest.raises(ApiError) as refused:
        api.request("POST", f"/executions/{execution_id}/resume", json_body={})
    assert refused.value.status == 409
    assert "the executor holds no state for this execution" in str(refused.value)
    assert "it is lost: kill it to record it ended, or replay it" in str(refused.value)

    def logged() -> list[str]:
        lines = api.request("GET", f"/logs/{execution_id}")
        return [line["message"] for line in lines if "RESUME command" in line["message"]]

    (line,) = wait_until(logged, what="the refusal in the execution's log")
    assert "was not applied: the executor holds no state for this execution" in line


def test_an_unknown_execution_is_not_found(api: ApiClient) -> None:
    with pytest.raises(ApiError) as missing:
        api.request("POST", "/executions/no-such-execution-0000000/restart")
    assert missing.value.status == 404
    # A kill may overtake the start it is for: it is kept for the start, not refused.
    answer = api.request("POST", "/executions/not-started-yet-0000000/kill")
    assert answer["outcome"] == "PENDING" and "killed as soon as it does" in answer["message"]


def test_a_kill_records_a_lost_execution_ended(settings: Settings, api: ApiClient) -> None:
    execution_id = lose(settings, State.RUNNING)
    answer = api.request("POST", f"/executions/{execution_id}/kill")
    assert (answer["outcome"], answer["state"]) == ("APPLIED", "KILLED")
    assert "lost" in answer["message"]
    execution = api.request("GET", f"/executions/{execution_id}")
    assert execution["state"]["current"] == "KILLED" and execution["state"]["endDate"]


def test_the_watchdog_reports_a_lost_execution_and_not_a_waiting_one(
    settings: Settings, stack: LocalStack, api: ApiClient
) -> None:
    lost = lose(settings, State.RUNNING)
    waiting = start(api, "paused")
    wait_until(lambda: state_of(api, waiting) == "PAUSED", what="it pauses")

    def stuck_ids() -> set[str]:
        page = api.request("GET", "/executions", params={"stuck": "true", "size": 1000})
        return {item["id"] for item in page["results"]}

    wait_until(lambda: lost in stuck_ids(), what="the watchdog to report the lost execution")
    execution = api.request("GET", f"/executions/{lost}")
    assert execution["stuck"]["reason"] == "lost: the executor holds no state for this execution"
    # The paused one was probed too (it is quiet), and the executor's answer said it
    # waits for a resume: not stuck.
    wait_until(lambda: _checked(settings, waiting), what="the answer to the paused one's probe")
    assert "stuck" not in api.request("GET", f"/executions/{waiting}")
    assert waiting not in stuck_ids()

    listed = run_cli(stack, "execution", "list", "--stuck", "--size", "1000", timeout_s=60)
    assert listed.returncode == 0, listed.stderr
    assert f"{lost}  {NAMESPACE}/paused  RUNNING  stuck: lost:" in listed.stdout

    request = urllib.request.Request(
        f"{stack.url}/metrics", headers={"Authorization": f"Bearer {os.environ['HEADRACE_TOKEN']}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        metrics = response.read().decode()
    (value,) = [
        line.split()[1]
        for line in metrics.splitlines()
        if line.startswith("headrace_executions_stuck ")
    ]
    assert float(value) >= 1


def _checked(settings: Settings, execution_id: str) -> bool:
    async def read() -> bool:
        conn = await asyncpg.connect(settings.database_url)
        try:
            checked = await conn.fetchval(
                "SELECT checked_at FROM executions WHERE id = $1", execution_id
            )
        finally:
            await conn.close()
        return checked is not None

    return asyncio.run(read())
