"""A flow end to end: REST API -> Kafka -> executor -> workers -> indexer -> PostgreSQL.

Every service runs as its own process (as under `headrace server local`), on the
session's embedded broker and database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.local import LocalStack
from headrace.services.scheduler.kafka_triggers import default_group_id
from tests.integration.stacks import run_cli
from tests.integration.test_kafka_triggers import committed
from tests.integration.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]

THREE_TASKS = """\
id: three-tasks
namespace: tests.e2e
inputs:
  - id: who
    type: STRING
    defaults: world
tasks:
  - id: make
    type: shell
    commands:
      - echo "making for {{ inputs.who }}"
      - |
        echo '::{"outputs": {"word": "hello-{{ inputs.who }}", "n": 3}}::'
  - id: double
    type: python
    script: |
      from headrace.task import outputs
      n = {{ outputs.make.n }}
      print("doubling", n)
      outputs(doubled=n * 2, word="{{ outputs.make.word }}".upper())
  - id: say
    type: log
    message: "{{ outputs.double.word }} x{{ outputs.double.doubled }}"
"""

ALWAYS_FAILS = """\
id: always-fails
namespace: tests.e2e
tasks:
  - id: boom
    type: shell
    retry:
      type: constant
      interval: PT0.1S
      maxAttempts: 3
    commands:
      - echo "about to fail" >&2
      - exit 7
"""


E2E_SECRET = "e2e-tok-7c41d9"
# The task checks the value by its SHA-256, so the flow's source does not hold it.
SECRETS_FLOW = """\
id: secrets
namespace: tests.e2e
inputs:
  - id: note
    type: STRING
tasks:
  - id: call
    type: shell
    env:
      TOKEN: "{{ secret('E2E_TOKEN') }}"
      NOTE: "{{ inputs.note }}"
      EXPECTED: 0a2e376a7208a438cee8eabe16055cd535ca0844ee5f0cd240f3a64b88839ac1
    commands:
      - test "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" = "$EXPECTED"
      - echo "token=$TOKEN note=$NOTE"
"""


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    asyncio.run(migrate_url(settings.database_url))
    stack_settings = dataclasses.replace(settings, gateway_port=free_port())
    stack = LocalStack(stack_settings, log_dir=tmp_path_factory.mktemp("stack-logs"))
    with pytest.MonkeyPatch.context() as patch:
        # The workers' one secret: services get this process's environment (restarts too).
        patch.setenv("HEADRACE_SECRET_E2E_TOKEN", E2E_SECRET)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    return ApiClient(stack.url, timeout_s=60)


def put_flow(api: ApiClient, source: str, namespace: str, flow_id: str) -> dict:
    return api.request(
        "PUT",
        f"/flows/{namespace}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )


def wait_for_logs(api: ApiClient, execution_id: str, count: int, timeout_s: float = 30) -> list:
    """Logs are indexed asynchronously: poll until `count` lines are there (or time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        logs = api.request("GET", f"/logs/{execution_id}")
        if len(logs) >= count or time.monotonic() > deadline:
            return logs
        time.sleep(0.05)


def test_three_tasks_succeed_with_outputs_passed_along(api: ApiClient) -> None:
    put_flow(api, THREE_TASKS, "tests.e2e", "three-tasks")
    execution = api.request(
        "POST",
        "/executions/tests.e2e/three-tasks",
        params={"wait": "true", "timeout": "60"},
        json_body={"who": "kafka"},
    )
    assert execution["state"]["current"] == "SUCCESS"
    assert execution["inputs"] == {"who": "kafka"}
    runs = {run["taskId"]: run for run in execution["taskRunList"]}
    assert [run["taskId"] for run in execution["taskRunList"]] == ["make", "double", "say"]
    assert runs["make"]["outputs"]["word"] == "hello-kafka"
    assert runs["double"]["outputs"]["doubled"] == 6
    assert runs["double"]["outputs"]["word"] == "HELLO-KAFKA"
    assert all(run["state"]["current"] == "SUCCESS" for run in runs.values())
    assert all(len(run["attempts"]) == 1 for run in runs.values())
    # A guard, not a benchmark (docs/architecture.md, "The executor's consumer"): a hop
    # measures ~15 ms here; stock Faust waits ~750 ms per fetch on the embedded broker. Over 400 ms, the low-latency setting is lost.
    ordered = execution["taskRunList"]
    for before, after in itertools.pairwise(ordered):
        ended = datetime.fromisoformat(before["attempts"][-1]["state"]["endDate"])
        started = datetime.fromisoformat(after["attempts"][0]["state"]["startDate"])
        assert (started - ended).total_seconds() < 0.4, (before["taskId"], after["taskId"])

    logs = wait_for_logs(api, execution["id"], 3)
    assert len(logs) == 3  # one line per task; the outputs marker line is not a log line
    messages = [(line["taskId"], line["message"]) for line in logs]
    assert ("make", "making for kafka") in messages
    assert ("double", "doubling 3") in messages
    assert ("say", "HELLO-KAFKA x6") in messages


def test_a_flow_secret_reaches_its_task_and_nothing_else(api: ApiClient) -> None:
    put_flow(api, SECRETS_FLOW, "tests.e2e", "secrets")
    execution = api.request(
        "POST",
        "/executions/tests.e2e/secrets",
        params={"wait": "true", "timeout": "60"},
        json_body={"note": "hello"},
    )
    (run,) = execution["taskRunList"]
    assert execution["state"]["current"] == "SUCCESS", run["attempts"]  # the task had it
    logs = wait_for_logs(api, execution["id"], 1)
    assert [line["message"] for line in logs] == ["token=****** note=hello"]
    assert E2E_SECRET not in str(execution)


def test_failing_task_ends_failed_after_exactly_three_attempts(api: ApiClient) -> None:
    put_flow(api, ALWAYS_FAILS, "tests.e2e", "always-fails")
    execution = api.request(
        "POST",
        "/executions/tests.e2e/always-fails",
        params={"wait": "true", "timeout": "60"},
        json_body={},
    )
    assert execution["state"]["current"] == "FAILED"
    (run,) = execution["taskRunList"]
    assert run["state"]["current"] == "FAILED"
    assert len(run["attempts"]) == 3
    assert all(a["state"]["current"] == "FAILED" for a in run["attempts"])
    assert "exit code 7" in (run["attempts"][-1].get("error") or "")
    logs = wait_for_logs(api, execution["id"], 3)
    assert sum(1 for line in logs if line["message"] == "about to fail") == 3


def test_invalid_flow_is_refused_with_a_precise_message(api: ApiClient) -> None:
    source = THREE_TASKS.replace("type: python", "type: pyhton").replace(
        "id: three-tasks", "id: broken"
    )
    with pytest.raises(ApiError) as refused:
        put_flow(api, source, "tests.e2e", "broken")
    assert refused.value.status == 422
    (error,) = [e for e in refused.value.errors if "pyhton" in e["message"]]
    assert error["path"] == "tasks[1].type"
    assert error["line"] == source.splitlines().index("    type: pyhton") + 1
    assert "python" in (error.get("hint") or "")
    with pytest.raises(ApiError) as missing:
        api.request("GET", "/flows/tests.e2e/broken")
    assert missing.value.status == 404


def test_readme_tour_through_the_cli(stack: LocalStack) -> None:
    applied = run_cli(stack, "flow", "apply", "examples/")
    assert applied.returncode == 0, applied.stderr
    assert "examples/hello" in applied.stdout

    again = run_cli(stack, "flow", "apply", "examples/")
    assert again.returncode == 0, again.stderr
    assert "0 applied" in again.stdout  # unchanged flows make no new revision

    started = run_cli(
        stack, "execution", "start", "examples", "hello", "--input", "name=tour", "--wait"
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "SUCCESS" in started.stdout
    execution_id = started.stdout.split()[2]  # "started execution ID"

    shown = run_cli(stack, "execution", "show", execution_id)
    assert "letters=4" in shown.stdout
    # Task run ids, for `execution replay --task-run-id`, are listed.
    runs = ApiClient(stack.url).request("GET", f"/executions/{execution_id}")["taskRunList"]
    assert all(f"id {run['id']}" in shown.stdout for run in runs)

    # A flow that pauses: `--wait` says so, and how to resume it.
    paused = run_cli(
        stack, "execution", "start", "examples", "approval", "--wait", "--timeout", "3"
    )
    assert paused.returncode == 1
    assert "is PAUSED after 3s, waiting for a resume: `headrace execution resume" in paused.stdout
    killed = run_cli(stack, "execution", "kill", paused.stdout.split()[2])
    assert killed.returncode == 0, killed.stdout + killed.stderr

    looped = run_cli(stack, "execution", "start", "examples", "per-table", "--wait")
    assert looped.returncode == 0, looped.stdout + looped.stderr
    assert "load-table[orders]" in looped.stdout  # for-each runs show their item

    deadline = time.monotonic() + 30
    while True:
        logs = run_cli(stack, "logs", execution_id)
        if "tour has 4 letters" in logs.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert logs.returncode == 0, logs.stderr
    assert "Hello, tour!" in logs.stdout
    assert "tour has 4 letters" in logs.stdout

    failed = run_cli(stack, "execution", "start", "examples", "flaky", "--wait")
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout


def test_the_hello_example_takes_any_name_as_data(stack: LocalStack, tmp_path: Path) -> None:
    """The tester's input: quotes and command substitutions in `name` run nothing."""
    applied = run_cli(stack, "flow", "apply", "examples/hello.yaml")
    assert applied.returncode == 0, applied.stderr
    marker = tmp_path / "pwned"
    name = f'x"; touch {marker}; echo "$(touch {marker})`touch {marker}`'
    started = run_cli(
        stack, "execution", "start", "examples", "hello", "--input", f"name={name}", "--wait"
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"letters={len(name.encode())}" in started.stdout
    assert not marker.exists()


def test_readme_trigger_tour(stack: LocalStack, settings: Settings) -> None:
    """The README's triggers part: a webhook call, a wrong key, a flow after a flow, a
    Kafka message, and the trigger listing with a schedule switched off."""
    applied = run_cli(stack, "flow", "apply", "examples/")
    assert applied.returncode == 0, applied.stderr
    api = ApiClient(stack.url)

    hook = "/executions/webhook/examples/on-webhook/tour-0123456789abcdef"
    called = api.request("POST", hook, json_body={"ref": "release", "pusher": "ada"})
    with pytest.raises(ApiError) as wrong:
        api.request("POST", hook.replace("tour-", "tuor-"), json_body={})
    assert wrong.value.status == 404

    hello = run_cli(stack, "execution", "start", "examples", "hello", "--wait")
    hello_id = hello.stdout.split()[2]

    group = default_group_id("examples", "from-kafka", "orders")
    wait_until(
        lambda: committed(settings, group, "examples.orders"), what="the Kafka trigger to join"
    )
    sent = subprocess.run(
        [
            sys.executable,
            "examples/produce.py",
            settings.kafka_bootstrap,
            "examples.orders",
            '{"id": 7}',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr

    def ended(flow_id: str) -> list[dict]:
        page = api.request(
            "GET", "/executions", params={"namespace": "examples", "flowId": flow_id}
        )
        return [e for e in page["results"] if e["state"]["current"] == "SUCCESS"]

    webhook_run = wait_until(lambda: ended("on-webhook"), what="the webhook execution")[0]
    assert webhook_run["id"] == called["id"] and webhook_run["inputs"] == {"branch": "release"}
    # Earlier tests ran `hello` too: wait for the run this one's end triggered.
    wait_until(
        lambda: [e for e in ended("after-hello") if e["trigger"]["executionId"] == hello_id],
        what="the flow-triggered execution",
    )
    (kafka_run,) = wait_until(lambda: ended("from-kafka"), what="the Kafka-triggered execution")
    assert kafka_run["inputs"] == {"order": 7}

    disabled = run_cli(stack, "trigger", "disable", "examples", "every-minute", "tick")
    assert disabled.returncode == 0, disabled.stderr
    listing = run_cli(stack, "trigger", "list", "--namespace", "examples")
    assert "examples/every-minute/tick  schedule  disabled" in listing.stdout
    assert "examples/on-webhook/push  webhook  enabled  last fired 20" in listing.stdout
    # A schedule shows what it last started, not its watermark, and nothing next when off.
    assert re.search(
        r"examples/every-minute/tick  schedule  disabled  last fired \S+  next -", listing.stdout
    )
    assert "4 triggers" in listing.stdout


def test_cli_reports_unreachable_server_without_traceback() -> None:
    env = dict(os.environ, HEADRACE_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "flow", "list"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "cannot reach headrace" in result.stderr
    assert "Traceback" not in result.stderr


WITH_ERRORS_BRANCH = """\
id: with-errors
namespace: tests.e2e
tasks:
  - id: extract
    type: log
    message: extracting
  - id: transform
    type: shell
    commands:
      - exit 2
  - id: never
    type: log
    message: must not run
errors:
  - id: alert
    type: log
    level: ERROR
    message: "{{ flow.id }} failed: {{ execution.id }}"
finally:
  - id: cleanup
    type: log
    message: cleaning up
"""


def test_errors_and_finally_branches_run_after_a_failure(api: ApiClient) -> None:
    put_flow(api, WITH_ERRORS_BRANCH, "tests.e2e", "with-errors")
    execution = api.request(
        "POST", "/executions/tests.e2e/with-errors", params={"wait": "true"}, json_body={}
    )
    assert execution["state"]["current"] == "FAILED"
    states = {run["taskId"]: run["state"]["current"] for run in execution["taskRunList"]}
    assert states == {
        "extract": "SUCCESS",
        "transform": "FAILED",
        "alert": "SUCCESS",
        "cleanup": "SUCCESS",
    }
    logs = wait_for_logs(api, execution["id"], 4)
    assert ("alert", "ERROR", f"with-errors failed: {execution['id']}") in [
        (line["taskId"], line["level"], line["message"]) for line in logs
    ]


def test_flow_apply_dry_run_prune_and_export(stack: LocalStack, tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.yaml").write_text(
            f"id: {name}\nnamespace: tests.gitops\ntasks:\n  - id: t\n    type: log\n    message: {name}\n"
        )
    first = run_cli(stack, "flow", "apply", str(folder))
    assert first.returncode == 0, first.stderr
    assert "2 applied" in first.stdout

    (folder / "two.yaml").unlink()
    (folder / "one.yaml").write_text(
        (folder / "one.yaml").read_text().replace("message: one", "message: uno")
    )
    plan = run_cli(stack, "flow", "apply", str(folder), "--dry-run", "--prune")
    assert plan.returncode == 0, plan.stderr
    assert "update    tests.gitops/one" in plan.stdout
    assert "delete    tests.gitops/two" in plan.stdout
    listed = run_cli(stack, "flow", "list", "--namespace", "tests.gitops")
    assert "tests.gitops/two" in listed.stdout  # the dry run changed nothing

    pruned = run_cli(stack, "flow", "apply", str(folder), "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "tests.gitops/one revision 2" in pruned.stdout
    listed = run_cli(stack, "flow", "list", "--namespace", "tests.gitops")
    assert "tests.gitops/two" not in listed.stdout

    exported = run_cli(
        stack, "flow", "export", str(tmp_path / "out"), "--namespace", "tests.gitops"
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / "tests.gitops" / "one.yaml").read_text() == (
        folder / "one.yaml"
    ).read_text()


def test_invalid_folder_applies_nothing(stack: LocalStack, tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "id: good\nnamespace: tests.atomic\ntasks:\n  - id: t\n    type: log\n    message: hi\n"
    )
    (tmp_path / "bad.yaml").write_text(
        "id: bad\nnamespace: tests.atomic\ntasks:\n  - id: t\n    type: nope\n"
    )
    result = run_cli(stack, "flow", "apply", str(tmp_path))
    assert result.returncode == 1
    assert "bad.yaml:5" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    listed = run_cli(stack, "flow", "list", "--namespace", "tests.atomic")
    assert "tests.atomic/good" not in listed.stdout
