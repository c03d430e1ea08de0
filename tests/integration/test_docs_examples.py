"""The flow reference's examples, run for real: each ends in the state its block promises.

Every ```yaml block of `docs/flows.md` whose first line is `# expect: STATE` is applied
(all its YAML documents, in namespace `docs.examples`), its last document is started,
and the execution must end in STATE. A `# resume: {json}` line resumes the execution
with that body each time it is PAUSED. All examples run at once (they are independent),
then each test checks one. The pipeline of `examples/` runs too, against the vendors'
fakes (tests/fakes) and real dbt and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.flow_files import apply_folder
from tests.fakes import airbyte, hightouch, serving, slack
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until
from tests.unit.test_docs_flows import Example, runnable_examples

NAMESPACE = "docs.examples"
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
DEADLINE_S = 120
AIRBYTE_TOKEN = "airbyte-example-token-0123"

# Examples that show the intended behaviour but hit a known engine bug: they must still
# fail (strict xfail), so the marker is removed as soon as the engine is fixed.
KNOWN_ISSUES: dict[str, str] = {}


@dataclasses.dataclass
class Vendors:
    """The fakes the example pipeline calls, and the database it builds in."""

    airbyte: airbyte.FakeAirbyte
    airbyte_url: str
    hightouch: hightouch.FakeHightouch
    hightouch_url: str
    slack: slack.FakeSlack
    slack_url: str
    database_url: str


@pytest.fixture(scope="module")
def vendors(settings: Settings) -> Iterator[Vendors]:
    fakes = (
        airbyte.FakeAirbyte(airbyte.demo_connections(), token=AIRBYTE_TOKEN),
        hightouch.FakeHightouch(hightouch.demo_syncs()),
        slack.FakeSlack(),
    )
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serving(fake.app())) for fake in fakes]
        yield Vendors(
            fakes[0], urls[0], fakes[1], urls[1], fakes[2], urls[2], settings.database_url
        )


@pytest.fixture(scope="module")
def api(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, vendors: Vendors
) -> Iterator[ApiClient]:
    secrets = {
        "HEADRACE_SECRET_AIRBYTE_TOKEN": AIRBYTE_TOKEN,
        "HEADRACE_SECRET_HIGHTOUCH_TOKEN": hightouch.TOKEN,
        "HEADRACE_SECRET_SLACK_WEBHOOK": vendors.slack_url + slack.HOOK,
        "HEADRACE_SECRET_WAREHOUSE_PASSWORD": (
            urllib.parse.urlsplit(vendors.database_url).password or "unused-by-trust-auth"
        ),
    }
    with running_stack(settings, tmp_path_factory, "docs-logs", secrets=secrets) as stack:
        yield ApiClient(stack.url, timeout_s=60)


def execution(api: ApiClient, execution_id: str) -> dict | None:
    try:
        return api.request("GET", f"/executions/{execution_id}")
    except ApiError as exc:
        if exc.status == 404:  # not indexed yet
            return None
        raise


def in_namespace(source: str) -> str:
    """The example moved to the test namespace (its subflow calls included)."""
    return re.sub(r"\bcompany\.team\b", NAMESPACE, source)


def put_source(api: ApiClient, source: str) -> str:
    flow_id = re.search(r"^id: (\S+)", source, re.MULTILINE)
    assert flow_id, source
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id[1]}",
        body=source.encode(),
        content_type="application/x-yaml",
    )
    return flow_id[1]


@dataclasses.dataclass
class Outcome:
    example: Example
    execution_id: str
    final: dict | None = None
    resumes: int = 0


@pytest.fixture(scope="module")
def outcomes(api: ApiClient) -> dict[str, Outcome]:
    """Start every runnable example at once, resume the paused ones, wait for all ends."""
    started: dict[str, Outcome] = {}
    for example in runnable_examples():
        flow_id = ""
        for document in example.documents:
            flow_id = put_source(api, in_namespace(document))
        answer = api.request("POST", f"/executions/{NAMESPACE}/{flow_id}", json_body={})
        started[example.flow_id] = Outcome(example, answer["id"])

    def all_ended() -> bool:
        for outcome in started.values():
            if outcome.final is not None:
                continue
            current = execution(api, outcome.execution_id)
            state = current["state"]["current"] if current else None
            if state in TERMINAL:
                outcome.final = current
            elif state == "PAUSED" and outcome.example.resume is not None:
                try:
                    api.request(
                        "POST",
                        f"/executions/{outcome.execution_id}/resume",
                        json_body=outcome.example.resume,
                    )
                    outcome.resumes += 1
                except ApiError as exc:
                    if exc.status != 409:  # resumed already, not indexed as RUNNING yet
                        raise
        return all(outcome.final is not None for outcome in started.values())

    wait_until(all_ended, DEADLINE_S)
    return started


def _states(execution: dict, task_id: str) -> list[str]:
    return [r["state"]["current"] for r in execution["taskRunList"] if r["taskId"] == task_id]


def _attempts(execution: dict, task_id: str) -> list[str]:
    (run,) = [r for r in execution["taskRunList"] if r["taskId"] == task_id]
    return [attempt["state"]["current"] for attempt in run["attempts"]]


def _outputs(execution: dict, task_id: str) -> dict:
    (run,) = [r for r in execution["taskRunList"] if r["taskId"] == task_id]
    return run["outputs"]


def _values(execution: dict, task_id: str) -> list[str]:
    return sorted(r["value"] for r in execution["taskRunList"] if r["taskId"] == task_id)


# What the reference says about each example, beyond its end state.
CHECKS: dict[str, Callable[[dict], None]] = {
    "errors-finally-demo": lambda e: (
        _states(e, "never") == [] and _states(e, "alert") == _states(e, "cleanup") == ["SUCCESS"]
    ),
    "retry-constant": lambda e: _attempts(e, "always-fails") == ["FAILED"] * 3,
    "retry-exponential": lambda e: _attempts(e, "flaky-api") == ["FAILED", "FAILED", "SUCCESS"],
    "retry-random": lambda e: _attempts(e, "jittered") == ["FAILED", "SUCCESS"],
    "timeout-demo": lambda e: _attempts(e, "too-slow") == ["FAILED"],
    "allow-failure-demo": lambda e: (
        _states(e, "optional-refresh") == ["WARNING"] and _states(e, "goes-on") == ["SUCCESS"]
    ),
    "run-if-demo": lambda e: (
        _states(e, "old-step") == []
        and _states(e, "notify-team") == ["SKIPPED"]
        and _states(e, "always") == ["SUCCESS"]
    ),
    "outputs-demo": lambda e: (
        e["outputs"] == {"rows": 42, "summary": "outputs-demo loaded 42 rows"}
    ),
    "parallel-failure": lambda e: _states(e, "fine") == ["SUCCESS"] and _states(e, "after") == [],
    "if-demo": lambda e: _states(e, "full") == [] and _states(e, "incremental") == ["SUCCESS"],
    "switch-demo": lambda e: (
        _outputs(e, "convert") == {"value": "parquet", "defaults": True}
        and _states(e, "unsupported") == ["SUCCESS"]
    ),
    "foreach-demo": lambda e: (
        _values(e, "count") == ["apac", "eu", "us"]
        and _values(e, "check-column") == ["id", "id", "total"]
    ),
    "subflow-demo": lambda e: (
        _outputs(e, "call")["state"] == "SUCCESS" and _outputs(e, "call")["outputs"] == {"y": 144}
    ),
    "subflow-transmit-failed": lambda e: (
        _outputs(e, "best-effort")["state"] == "FAILED"
        and set(_outputs(e, "fire-and-forget")) == {"executionId"}
    ),
    "vacation-approval": lambda e: (
        _outputs(e, "wait_for_approval")["onResume"] == {"approved": True, "reason": "looks good"}
        and _states(e, "approve") == ["SUCCESS"]
    ),
    "fail-demo": lambda e: _states(e, "load") == [] and _states(e, "report") == ["SUCCESS"],
    "safe-inputs": lambda e: (
        _states(e, "shell-reads-env") == ["SUCCESS"]
        and _outputs(e, "python-reads-env") == {"exitCode": 0, "batch": 500}
    ),
}


def _ids() -> list[str]:
    return [example.flow_id for example in runnable_examples()]


def test_the_reference_runs_examples_of_every_kind() -> None:
    examples = runnable_examples()
    assert len(examples) >= 25
    expected = {example.expect for example in examples}
    assert {"SUCCESS", "WARNING", "FAILED"} <= expected
    assert any(example.resume is not None for example in examples)
    assert any(len(example.documents) > 1 for example in examples)


@pytest.mark.parametrize("flow_id", _ids())
def test_example_ends_as_documented(outcomes: dict[str, Outcome], flow_id: str) -> None:
    outcome = outcomes[flow_id]
    if flow_id in KNOWN_ISSUES:
        assert not _ended_as_expected(outcome), "fixed: drop it from KNOWN_ISSUES"
        pytest.xfail(KNOWN_ISSUES[flow_id])
    assert outcome.final is not None
    state = outcome.final["state"]["current"]
    assert state == outcome.example.expect, json.dumps(outcome.final, indent=1)[:4000]
    if outcome.example.resume is not None:
        assert outcome.resumes >= 1
    check = CHECKS.get(flow_id)
    if check is not None:
        assert check(outcome.final), json.dumps(outcome.final, indent=1)[:4000]


def test_every_check_names_an_example() -> None:
    assert set(CHECKS) <= set(_ids())


def _ended_as_expected(outcome: Outcome) -> bool:
    return outcome.final is not None and outcome.final["state"]["current"] == outcome.example.expect


def runs_by_task(execution: dict) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for run in execution["taskRunList"]:
        runs.setdefault(run["taskId"], []).append(run)
    return runs


def apply_pipeline(api: ApiClient, vendors: Vendors) -> None:
    """examples/elt-pipeline and its run-sql subflow, their `variables` pointed at this
    test's fakes and the session's database instead of the README's local ones."""
    url = urllib.parse.urlsplit(vendors.database_url)
    database = url.path.lstrip("/")
    warehouse = (
        f"{{host: {url.hostname}, port: {url.port or 5432}, database: {database},"
        f" user: {url.username or 'postgres'}}}"
    )
    changes = {
        "elt-pipeline": [
            ("http://127.0.0.1:8001", vendors.airbyte_url),
            ("http://127.0.0.1:8002", vendors.hightouch_url),
            (
                "{host: 127.0.0.1, port: 5433, database: analytics, user: postgres}",
                warehouse,
            ),
        ],
        "run-sql": [
            (
                "postgresql://postgres@127.0.0.1:5433/analytics",
                f"postgresql://{url.username or 'postgres'}@{url.hostname}:{url.port or 5432}/"
                + database,
            )
        ],
    }
    for flow_id, replacements in changes.items():
        source = (EXAMPLES_DIR / f"{flow_id}.yaml").read_text()
        for old, new in replacements:
            assert source.count(old) == 1, (flow_id, old)
            source = source.replace(old, new)
        api.request(
            "PUT",
            f"/flows/examples/{flow_id}",
            body=source.encode(),
            content_type="application/x-yaml",
        )


def start_pipeline(api: ApiClient, **inputs: Any) -> str:
    body = {"dbt_project": str(EXAMPLES_DIR / "dbt"), **inputs}
    return api.request("POST", "/executions/examples/elt-pipeline", json_body=body)["id"]


def ended_execution(api: ApiClient, execution_id: str) -> dict:
    return wait_until(
        lambda: (e := execution(api, execution_id)) and e["state"]["current"] in TERMINAL and e,
        DEADLINE_S,
    )


def log_lines(api: ApiClient, execution_id: str) -> list[str]:
    return [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]


def test_examples_folder_validates_and_the_elt_pipeline_runs(
    api: ApiClient, vendors: Vendors
) -> None:
    answer = apply_folder(api, [EXAMPLES_DIR], dry_run=False, prune=False, echo=lambda _: None)
    applied = {(f["namespace"], f["id"]): f["file"] for f in answer["flows"]}
    assert ("examples", "elt-pipeline") in applied, applied
    assert not any("dbt" in file for file in applied.values()), applied  # its project: no flows
    apply_pipeline(api, vendors)
    ended = ended_execution(api, start_pipeline(api))
    assert ended["state"]["current"] == "SUCCESS", json.dumps(ended, indent=1)[:4000]
    runs = runs_by_task(ended)
    # Both Airbyte syncs ran (billing's after one failed attempt inside Airbyte)...
    assert sorted(vendors.airbyte.syncs) == sorted([airbyte.ORDERS, airbyte.FLAKY])
    assert ended["outputs"]["orders_synced"] == 1200
    (billing,) = runs["sync-billing"]
    assert billing["outputs"]["attempts"] == 2
    # ...dbt built the models for real...
    assert ended["outputs"]["models"]["success"] == 3  # the seed and two models
    assert ended["outputs"]["models"]["pass"] == 4  # unique and not_null, twice
    (transform,) = runs["transform"]
    built = {r["uniqueId"]: r["status"] for r in transform["outputs"]["results"]}
    assert built["model.shop.customer_totals"] == "success"
    # ...the reusable SQL flow read them, with its parameter bound...
    assert ended["outputs"]["top_customers"] == [
        {"customer": "linus", "total": 220.0},
        {"customer": "ada", "total": 135.75},
    ]
    (call,) = runs["top-customers"]
    child = execution(api, call["outputs"]["executionId"])
    assert child is not None and child["flowId"] == "run-sql"
    # ...and Hightouch synced the result; nothing went to Slack.
    assert [sync for sync, _ in vendors.hightouch.triggers] == [hightouch.CONTACTS]
    assert ended["outputs"]["crm_rows"] == 773
    assert vendors.slack.messages == []
    # The vendors' logs and dbt's are the execution's logs.
    logs = "\n".join(log_lines(api, ended["id"]))
    assert "source > Read 1200 records from orders" in logs
    assert "OK created sql table model analytics.customer_totals" in logs
    assert "Completed successfully" in logs


def test_a_failing_sync_alerts_slack_and_a_kill_cancels_the_airbyte_job(
    api: ApiClient, vendors: Vendors
) -> None:
    apply_folder(api, [EXAMPLES_DIR], dry_run=False, prune=False, echo=lambda _: None)
    apply_pipeline(api, vendors)
    failing = start_pipeline(api, orders_connection=airbyte.BROKEN)
    slow = start_pipeline(api, orders_connection=airbyte.SLOW)
    failed = ended_execution(api, failing)
    assert failed["state"]["current"] == "FAILED"
    (orders,) = runs_by_task(failed)["sync-orders"]
    assert "Checking source connection failed" in orders["attempts"][-1]["error"]
    assert _states(failed, "transform") == [] and _states(failed, "alert") == ["SUCCESS"]
    assert {"text": f"examples.elt-pipeline failed: execution {failing}"} in vendors.slack.messages

    def slow_job_running() -> int | None:
        jobs = [j for j in list(vendors.airbyte.jobs.values()) if j.connection_id == airbyte.SLOW]
        return jobs[0].id if jobs and jobs[0].status == "running" else None

    job_id = wait_until(slow_job_running, DEADLINE_S, "the slow Airbyte job to run")
    api.request("POST", f"/executions/{slow}/kill")
    killed = ended_execution(api, slow)
    assert killed["state"]["current"] == "KILLED"
    assert job_id in vendors.airbyte.cancels
    assert vendors.airbyte.jobs[job_id].status == "cancelled"
    assert f"cancelled Airbyte job {job_id}" in log_lines(api, slow)


def test_the_approval_example_waits_for_a_resume(api: ApiClient) -> None:
    lines: list[str] = []
    apply_folder(
        api, [EXAMPLES_DIR / "approval.yaml"], dry_run=False, prune=False, echo=lines.append
    )
    execution_id = api.request("POST", "/executions/examples/approval", json_body={})["id"]
    paused = wait_until(
        lambda: (e := execution(api, execution_id)) and e["state"]["current"] == "PAUSED" and e,
        DEADLINE_S,
    )
    assert _states(paused, "wait-for-approval") == ["PAUSED"]
    assert _states(paused, "decide") == []
    api.request(
        "POST",
        f"/executions/{execution_id}/resume",
        json_body={"approved": "true", "approver": "ada"},
    )
    ended = wait_until(
        lambda: (e := execution(api, execution_id)) and e["state"]["current"] in TERMINAL and e,
        DEADLINE_S,
    )
    assert ended["state"]["current"] == "SUCCESS"
    assert _states(ended, "publish") == ["SUCCESS"] and _states(ended, "rejected") == []
