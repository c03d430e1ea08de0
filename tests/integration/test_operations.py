"""The flow language and execution operations through the real services.

Kill, pause/resume, restart, replay, subflows and flowable tasks, each driven through
the REST API against every service running as its own process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from headrace import codec
from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.messages import CommandKind, ExecutionCommand
from headrace.topics import EXECUTION_COMMANDS
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.ops"
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    with running_stack(settings, tmp_path_factory, "ops-logs") as stack:
        yield ApiClient(stack.url, timeout_s=60)


def execution(api: ApiClient, execution_id: str) -> dict | None:
    try:
        return api.request("GET", f"/executions/{execution_id}")
    except ApiError as exc:
        if exc.status == 404:  # not indexed yet
            return None
        raise


def wait_for_state(api: ApiClient, execution_id: str, *states: str) -> dict:
    return wait_until(
        lambda: (e := execution(api, execution_id)) and e["state"]["current"] in states and e
    )


def apply_and_start(api: ApiClient, source: str, flow_id: str, **inputs: Any) -> str:
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )
    return api.request("POST", f"/executions/{NAMESPACE}/{flow_id}", json_body=inputs)["id"]


def runs_by_task(execution: dict) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for run in execution["taskRunList"]:
        runs.setdefault(run["taskId"], []).append(run)
    return runs


def log_messages(api: ApiClient, execution_id: str) -> list[str]:
    return [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]


def test_kill_stops_the_running_task_and_what_follows(api: ApiClient, tmp_path: Path) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    execution_id = apply_and_start(
        api,
        f"""
id: long
namespace: {NAMESPACE}
tasks:
  - id: sleep
    type: shell
    commands: ["touch {started}", "sleep 60", "touch {finished}"]
  - id: never
    type: log
    message: must not run
""",
        "long",
    )
    wait_until(started.exists)
    api.request("POST", f"/executions/{execution_id}/kill")
    ended = wait_for_state(api, execution_id, *TERMINAL)
    assert ended["state"]["current"] == "KILLED"
    runs = runs_by_task(ended)
    assert runs["sleep"][0]["state"]["current"] == "KILLED"
    assert "never" not in runs
    assert not finished.exists()


def test_pause_then_resume_with_inputs(api: ApiClient) -> None:
    execution_id = apply_and_start(
        api,
        f"""
id: approval
namespace: {NAMESPACE}
tasks:
  - id: before
    type: log
    message: waiting for approval
  - id: approve
    type: flow.pause
  - id: after
    type: log
    message: "approved by {{{{ outputs.approve.approver }}}}"
""",
        "approval",
    )
    paused = wait_for_state(api, execution_id, "PAUSED")
    assert runs_by_task(paused)["approve"][0]["state"]["current"] == "PAUSED"
    api.request("POST", f"/executions/{execution_id}/resume", json_body={"approver": "ada"})
    ended = wait_for_state(api, execution_id, *TERMINAL)
    assert ended["state"]["current"] == "SUCCESS"
    assert wait_until(lambda: "approved by ada" in log_messages(api, execution_id))


def test_restart_reruns_only_the_failed_task(api: ApiClient, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    execution_id = apply_and_start(
        api,
        f"""
id: fragile
namespace: {NAMESPACE}
tasks:
  - id: first
    type: log
    message: first
  - id: check
    type: shell
    commands: ["test -e {fixed}"]
""",
        "fragile",
    )
    failed = wait_for_state(api, execution_id, *TERMINAL)
    assert failed["state"]["current"] == "FAILED"
    fixed.touch()
    api.request("POST", f"/executions/{execution_id}/restart")
    ended = wait_for_state(api, execution_id, "SUCCESS")
    runs = runs_by_task(ended)
    assert len(runs["first"]) == 1 and len(runs["first"][0]["attempts"]) == 1
    assert [a["state"]["current"] for a in runs["check"][0]["attempts"]] == ["FAILED", "SUCCESS"]


def test_replay_from_a_task_run_makes_a_new_execution(api: ApiClient) -> None:
    source = f"""
id: replayable
namespace: {NAMESPACE}
tasks:
  - id: one
    type: shell
    commands: ['echo ''::{{"outputs": {{"n": 7}}}}::''']
  - id: two
    type: log
    message: "n is {{{{ outputs.one.n }}}}"
"""
    execution_id = apply_and_start(api, source, "replayable")
    original = wait_for_state(api, execution_id, "SUCCESS")
    second = runs_by_task(original)["two"][0]
    answer = api.request(
        "POST", f"/executions/{execution_id}/replay", params={"taskRunId": second["id"]}
    )
    assert answer["id"] != execution_id
    replayed = wait_for_state(api, answer["id"], *TERMINAL)
    assert replayed["state"]["current"] == "SUCCESS"
    runs = runs_by_task(replayed)
    assert runs["one"][0]["outputs"]["n"] == 7  # kept from the original
    assert runs["two"][0]["id"] != second["id"]
    assert wait_until(lambda: "n is 7" in log_messages(api, answer["id"]))


def test_subflow_passes_inputs_and_returns_outputs(api: ApiClient) -> None:
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/child",
        body=f"""
id: child
namespace: {NAMESPACE}
inputs:
  - id: x
    type: INT
tasks:
  - id: square
    type: python
    script: |
      from headrace.task import outputs
      outputs(y={{{{ inputs.x }}}} ** 2)
outputs:
  - id: y
    value: "{{{{ outputs.square.y }}}}"
""".encode(),
        content_type="application/x-yaml",
    )
    execution_id = apply_and_start(
        api,
        f"""
id: parent
namespace: {NAMESPACE}
tasks:
  - id: call
    type: flow.subflow
    namespace: {NAMESPACE}
    flowId: child
    inputs:
      x: 12
  - id: report
    type: log
    message: "child said {{{{ outputs.call.outputs.y }}}}"
""",
        "parent",
    )
    ended = wait_for_state(api, execution_id, *TERMINAL)
    assert ended["state"]["current"] == "SUCCESS", ended
    call = runs_by_task(ended)["call"][0]
    assert call["outputs"]["state"] == "SUCCESS"
    child = wait_for_state(api, call["outputs"]["executionId"], "SUCCESS")
    assert child["trigger"]["parentExecutionId"] == execution_id
    assert wait_until(lambda: "child said 144" in log_messages(api, execution_id))


def test_parallel_foreach_and_if(api: ApiClient) -> None:
    execution_id = apply_and_start(
        api,
        f"""
id: shapes
namespace: {NAMESPACE}
inputs:
  - id: deep
    type: BOOLEAN
    defaults: true
tasks:
  - id: fan
    type: flow.parallel
    tasks:
      - id: left
        type: log
        message: left
      - id: right
        type: log
        message: right
  - id: each
    type: flow.foreach
    values: ["a", "b", "c"]
    concurrencyLimit: 2
    tasks:
      - id: item
        type: log
        message: "item {{{{ taskrun.value }}}}"
  - id: choose
    type: flow.if
    condition: "{{{{ inputs.deep }}}}"
    then:
      - id: deep-branch
        type: log
        message: went deep
    else:
      - id: shallow-branch
        type: log
        message: stayed shallow
""",
        "shapes",
    )
    ended = wait_for_state(api, execution_id, *TERMINAL)
    assert ended["state"]["current"] == "SUCCESS"
    runs = runs_by_task(ended)
    assert sorted(r["value"] for r in runs["item"]) == ["a", "b", "c"]
    assert "shallow-branch" not in runs
    messages = wait_until(lambda: (m := log_messages(api, execution_id)) and "went deep" in m and m)
    assert {"left", "right", "item a", "item b", "item c"} <= set(messages)
    # The parallel branches both ended before the foreach began (sequential at top level).
    fan_end = max(datetime.fromisoformat(r["state"]["endDate"]) for r in runs["fan"])
    first_item = min(datetime.fromisoformat(r["state"]["startDate"]) for r in runs["item"])
    assert fan_end <= first_item


def test_concurrency_limit_queues_then_fails_over_the_limit(api: ApiClient, tmp_path: Path) -> None:
    release = tmp_path / "release"
    source = f"""
id: one-at-a-time
namespace: {NAMESPACE}
concurrency:
  limit: 1
tasks:
  - id: hold
    type: shell
    commands: ["while [ ! -e {release} ]; do sleep 0.05; done"]
"""
    first = apply_and_start(api, source, "one-at-a-time")
    wait_for_state(api, first, "RUNNING")
    second = api.request("POST", f"/executions/{NAMESPACE}/one-at-a-time", json_body={})["id"]
    queued = wait_for_state(api, second, "QUEUED")
    assert queued["taskRunList"] == []  # waits for the slot: nothing started
    release.touch()
    done_first = wait_for_state(api, first, *TERMINAL)
    done_second = wait_for_state(api, second, *TERMINAL)
    assert done_first["state"]["current"] == done_second["state"]["current"] == "SUCCESS"
    first_end = datetime.fromisoformat(done_first["state"]["endDate"])
    second_start = datetime.fromisoformat(done_second["taskRunList"][0]["state"]["startDate"])
    assert second_start >= first_end

    failing = source.replace("limit: 1", "limit: 1\n  behavior: FAIL").replace(
        "one-at-a-time", "fail-fast"
    )
    release.unlink()
    holder = apply_and_start(api, failing, "fail-fast")
    wait_for_state(api, holder, "RUNNING")
    refused = api.request("POST", f"/executions/{NAMESPACE}/fail-fast", json_body={})["id"]
    assert wait_for_state(api, refused, *TERMINAL)["state"]["current"] == "FAILED"
    release.touch()
    assert wait_for_state(api, holder, *TERMINAL)["state"]["current"] == "SUCCESS"


def cli(api: ApiClient, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HEADRACE_URL=api.base_url)
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_operations_from_the_cli(api: ApiClient, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    source = f"""
id: cli-ops
namespace: {NAMESPACE}
tasks:
  - id: gate
    type: flow.pause
  - id: check
    type: shell
    commands: ["test -e {fixed}"]
  - id: after
    type: log
    message: "resumed with {{{{ outputs.gate.note }}}}"
"""
    execution_id = apply_and_start(api, source, "cli-ops")
    wait_for_state(api, execution_id, "PAUSED")

    wrong = cli(api, "execution", "restart", execution_id)
    assert wrong.returncode == 1
    assert "the execution is PAUSED" in wrong.stderr and "Traceback" not in wrong.stderr

    resumed = cli(api, "execution", "resume", execution_id, "--input", "note=hi")
    assert resumed.returncode == 0, resumed.stderr
    assert wait_for_state(api, execution_id, *TERMINAL)["state"]["current"] == "FAILED"

    fixed.touch()
    restarted = cli(api, "execution", "restart", execution_id)
    assert restarted.returncode == 0, restarted.stderr
    ended = wait_for_state(api, execution_id, "SUCCESS")
    assert wait_until(lambda: "resumed with hi" in log_messages(api, execution_id))

    replayed = cli(api, "execution", "replay", execution_id)
    assert replayed.returncode == 0, replayed.stderr
    new_id = replayed.stdout.split()[-1]
    assert new_id != execution_id
    assert wait_for_state(api, new_id, "PAUSED")  # from the start: the gate pauses again
    killed = cli(api, "execution", "kill", new_id)
    assert killed.returncode == 0, killed.stderr
    assert wait_for_state(api, new_id, *TERMINAL)["state"]["current"] == "KILLED"
    assert len(runs_by_task(ended)["check"][0]["attempts"]) == 2


def test_an_event_the_executor_cannot_apply_fails_only_its_execution(
    api: ApiClient, settings: Settings
) -> None:
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/waits",
        body=f"id: waits\nnamespace: {NAMESPACE}\ntasks: [{{id: w, type: flow.pause}}]\n".encode(),
        content_type="application/x-yaml",
    )
    caller = apply_and_start(
        api,
        f"""
id: caller
namespace: {NAMESPACE}
tasks:
  - id: call
    type: flow.subflow
    namespace: {NAMESPACE}
    flowId: waits
""",
        "caller",
    )
    run = wait_until(
        lambda: (e := execution(api, caller)) and e["taskRunList"] and e["taskRunList"][0]
    )
    child = wait_for_state(api, run["outputs"]["executionId"], "PAUSED")["id"]
    # A malformed command from some other producer: the core raises (no such state), which
    # used to fail the whole batch and replay it forever.
    bogus = ExecutionCommand(
        "bogus-1",
        caller,
        CommandKind.CHILD_ENDED,
        datetime.now(UTC),
        task_run_id=run["id"],
        payload={"childExecutionId": child, "state": "BOGUS", "outputs": {}},
    )
    asyncio.run(produce(settings, EXECUTION_COMMANDS.name, caller, codec.encode(bogus)))

    assert wait_for_state(api, caller, *TERMINAL)["state"]["current"] == "FAILED"
    assert any(
        m.startswith("internal error while applying CHILD_ENDED: ValueError")
        for m in wait_until(lambda: log_messages(api, caller))
    )
    # Its work was cancelled like on a kill, and the executor goes on.
    assert wait_for_state(api, child, *TERMINAL)["state"]["current"] == "KILLED"
    healthy = apply_and_start(
        api,
        f"id: healthy\nnamespace: {NAMESPACE}\ntasks: [{{id: a, type: log, message: ok}}]\n",
        "healthy",
    )
    assert wait_for_state(api, healthy, *TERMINAL)["state"]["current"] == "SUCCESS"


async def produce(settings: Settings, topic: str, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()
