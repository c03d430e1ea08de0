"""Metrics, probes and JSON logs of every service, against the real processes.

The stack runs with a metrics port per service (`HEADRACE_METRICS_PORT`), JSON logs
(`HEADRACE_LOG_FORMAT=json`) at INFO. Metrics are read with prometheus-client's own
parser, so the text is checked to be valid exposition format too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.local import LocalStack, ServiceProcess
from tests.integration.stacks import put_flows, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.metrics"
KEY = "metrics-key-0123456789"
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}

FLOWS = {
    "counted": f"""
id: counted
namespace: {NAMESPACE}
tasks:
  - id: greet
    type: log
    message: hello
  - id: count
    type: shell
    commands: ["echo counted"]
triggers:
  - id: hook
    type: webhook
    key: {KEY}
""",
    "long": f"""
id: long
namespace: {NAMESPACE}
tasks:
  - id: wait
    type: shell
    commands: ["sleep 120"]
""",
    "orphan": f"""
id: orphan
namespace: {NAMESPACE}
tasks:
  - id: child
    type: flow.subflow
    namespace: {NAMESPACE}
    flowId: missing
""",
}


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as patch:
        # Read by every service process the stack starts (their `--log-*` options).
        patch.setenv("HEADRACE_LOG_FORMAT", "json")
        patch.setenv("HEADRACE_LOG_LEVEL", "INFO")
        with running_stack(settings, tmp_path_factory, "metrics-logs", metrics_port=0) as stack:
            yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    client = ApiClient(stack.url, timeout_s=60)
    put_flows(client, NAMESPACE, FLOWS)
    return client


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def process(stack: LocalStack, name: str) -> ServiceProcess:
    return next(p for p in stack.processes if p.name == name)


def probe_url(stack: LocalStack, name: str) -> str:
    url = process(stack, name).metrics_url(stack.settings.metrics_host)
    assert url is not None, f"{name} has no metrics port"
    return url


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when none)."""
    return sum(
        v
        for n, found, v in samples(text)
        if n == name and all(found.get(k) == want for k, want in labels.items())
    )


def service_metrics(stack: LocalStack, name: str) -> str:
    status, text = get(probe_url(stack, name) + "/metrics")
    assert status == 200, text
    return text


def gateway_metrics(stack: LocalStack, api_token: str) -> str:
    status, text = get(f"{stack.url}/metrics", {"Authorization": f"Bearer {api_token}"})
    assert status == 200, text
    return text


def wait_ended(api: ApiClient, execution_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        page = api.request("GET", "/executions", params={"namespace": NAMESPACE, "size": 100})
        for item in page["results"]:
            if item["id"] == execution_id and item["state"]["current"] in TERMINAL:
                return item
        return None

    return wait_until(ended, what=f"execution {execution_id} to end")


@pytest.mark.parametrize("name", ["scheduler", "executor", "worker", "indexer"])
def test_each_service_serves_health_readiness_and_metrics(stack: LocalStack, name: str) -> None:
    url = probe_url(stack, name)
    status, body = get(url + "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    # Ready once joined: the stack waited for that, but the first scrape may race it.
    wait_until(lambda: get(url + "/readyz")[0] == 200, what=f"{name} /readyz")
    status, body = get(url + "/readyz")
    assert json.loads(body) == {"status": "ready"}
    text = service_metrics(stack, name)
    assert value(text, "headrace_info", service=name) == 1
    assert value(text, "process_resident_memory_bytes") > 0


def test_the_gateway_is_ready_without_credentials_and_its_metrics_need_them(
    stack: LocalStack, api_token: str
) -> None:
    status, body = get(stack.url + "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    status, _ = get(stack.url + "/metrics")
    assert status == 401
    text = gateway_metrics(stack, api_token)
    assert value(text, "headrace_info", service="gateway") == 1
    assert "headrace_executions_stuck" in text


def test_metrics_show_the_executions_just_run(
    stack: LocalStack, api: ApiClient, api_token: str
) -> None:
    executor_before = service_metrics(stack, "executor")
    worker_before = service_metrics(stack, "worker")
    ended_before = value(executor_before, "headrace_executions_ended_total", state="SUCCESS")
    started_before = value(executor_before, "headrace_executions_started_total", trigger="api")
    webhooks_before = value(
        gateway_metrics(stack, api_token), "headrace_webhook_requests_total", status="202"
    )
    shells_before = value(
        worker_before,
        "headrace_task_attempt_duration_seconds_count",
        type="shell",
        state="SUCCESS",
    )

    by_api = api.request("POST", f"/executions/{NAMESPACE}/counted")["id"]
    hook = f"{stack.url}/api/v1/executions/webhook/{NAMESPACE}/counted/{KEY}"
    request = urllib.request.Request(hook, data=b"{}", method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        by_hook = json.loads(response.read())["id"]
    status, _ = get(f"{stack.url}/api/v1/executions/webhook/{NAMESPACE}/counted/wrong-key")
    assert status == 404
    for execution_id in (by_api, by_hook):
        assert wait_ended(api, execution_id)["state"]["current"] == "SUCCESS"

    # The executor counted them before the index showed them ended.
    executor = service_metrics(stack, "executor")
    assert value(executor, "headrace_executions_ended_total", state="SUCCESS") >= ended_before + 2
    assert value(executor, "headrace_executions_started_total", trigger="api") >= started_before + 1
    assert value(executor, "headrace_executions_started_total", trigger="webhook") >= 1
    assert value(executor, "headrace_executor_batch_events_count") >= 2
    assert value(executor, "headrace_executor_batch_duration_seconds_count") >= 2
    assert value(executor, "headrace_executor_step_duration_seconds_count") >= 2
    # Every input partition of the executor's group is reported, none with an execution id.
    lags = [
        labels
        for name, labels, _ in samples(executor)
        if name == "headrace_consumer_lag_records" and labels["group"] == "headrace-executor"
    ]
    assert {labels["topic"] for labels in lags} >= {"triggers", "task-results"}
    assert all(labels["partition"].isdigit() for labels in lags)

    worker = service_metrics(stack, "worker")
    shells = value(
        worker, "headrace_task_attempt_duration_seconds_count", type="shell", state="SUCCESS"
    )
    assert shells >= shells_before + 2
    assert value(worker, "headrace_task_attempt_duration_seconds_sum", type="shell") > 0
    assert value(worker, "headrace_worker_slots") == stack.settings.worker_concurrency
    assert value(worker, "headrace_consumer_lag_records", group="headrace-workers") >= 0
    assert any(
        name == "headrace_consumer_lag_records" and labels["group"] == "headrace-workers"
        for name, labels, _ in samples(worker)
    )
    indexer = service_metrics(stack, "indexer")
    assert {
        labels["topic"]
        for name, labels, _ in samples(indexer)
        if name == "headrace_consumer_lag_records" and labels["group"] == "headrace-indexer"
    } == {"executions", "logs"}

    gateway = gateway_metrics(stack, api_token)
    assert value(gateway, "headrace_webhook_requests_total", status="202") >= webhooks_before + 1
    assert value(gateway, "headrace_webhook_requests_total", status="404") >= 1


def test_a_running_task_holds_a_worker_slot(stack: LocalStack, api: ApiClient) -> None:
    execution_id = api.request("POST", f"/executions/{NAMESPACE}/long")["id"]
    wait_until(
        lambda: value(service_metrics(stack, "worker"), "headrace_worker_slots_in_use") >= 1,
        what="the sleeping task to hold a slot",
    )
    api.request("POST", f"/executions/{execution_id}/kill")
    assert wait_ended(api, execution_id)["state"]["current"] == "KILLED"
    wait_until(
        lambda: value(service_metrics(stack, "worker"), "headrace_worker_slots_in_use") == 0,
        what="the slot to be released",
    )
    worker = service_metrics(stack, "worker")
    assert value(worker, "headrace_task_attempt_duration_seconds_count", state="KILLED") >= 1


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    assert lines, f"{path.name} is empty"
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not a JSON line: {line!r}")
    return entries


def test_json_logs_carry_execution_and_task_ids(
    stack: LocalStack, api: ApiClient, api_token: str
) -> None:
    # The executor logs that the child cannot start while it applies the parent's step.
    parent = api.request("POST", f"/executions/{NAMESPACE}/orphan")["id"]
    assert wait_ended(api, parent)["state"]["current"] == "FAILED"
    # The worker logs the kill of a running attempt, with its ids.
    killed = api.request("POST", f"/executions/{NAMESPACE}/long")["id"]
    wait_until(
        lambda: value(service_metrics(stack, "worker"), "headrace_worker_slots_in_use") >= 1,
        what="the task to run",
    )
    api.request("POST", f"/executions/{killed}/kill")
    assert wait_ended(api, killed)["state"]["current"] == "KILLED"

    assert stack.log_dir is not None
    entries = {
        name: json_lines(stack.log_dir / f"{name}.log")
        for name in ("gateway", "scheduler", "executor", "worker", "indexer")
    }
    for name, lines in entries.items():
        for entry in lines:
            assert entry["service"] == name
            assert {"time", "level", "logger", "message"} <= entry.keys()
    refused = wait_until(
        lambda: [
            e
            for e in json_lines(stack.log_dir / "executor.log")
            if e.get("execution_id") == parent and "cannot start execution" in e["message"]
        ],
        what="the executor's line about the parent",
    )
    assert refused[0]["level"] == "WARNING"
    kills = wait_until(
        lambda: [
            e
            for e in json_lines(stack.log_dir / "worker.log")
            if e.get("execution_id") == killed and "killing" in e["message"]
        ],
        what="the worker's line about the kill",
    )
    assert kills[0]["task_run_id"]
