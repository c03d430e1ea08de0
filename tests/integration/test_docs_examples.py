"""The flow reference's examples, run for real: each ends in the state its block promises.

Every ```yaml block of `docs/flows.md` whose first line is `# expect: STATE` is applied
(all its YAML documents, in namespace `docs.examples`), its last document is started,
and the execution must end in STATE. A `# resume: {json}` line resumes the execution
with that body each time it is PAUSED. All examples run at once (they are independent),
then each test checks one. The pipeline of `examples/` runs too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.flow_files import apply_folder
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until
from tests.unit.test_docs_flows import Example, runnable_examples

NAMESPACE = "docs.examples"
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
DEADLINE_S = 120

# Examples that show the intended behaviour but hit a known engine bug: they must still
# fail (strict xfail), so the marker is removed as soon as the engine is fixed.
KNOWN_ISSUES: dict[str, str] = {}


@pytest.fixture(scope="module")
def api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    with running_stack(settings, tmp_path_factory, "docs-logs") as stack:
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
    "pause-for-approval": lambda e: (
        _outputs(e, "approval") == {"approved": "yes", "approver": "ada"}
        and _states(e, "published") == ["SUCCESS"]
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


def test_examples_folder_validates_and_the_elt_pipeline_runs(api: ApiClient) -> None:
    lines: list[str] = []
    apply_folder(api, [EXAMPLES_DIR], dry_run=False, prune=False, echo=lines.append)
    assert any("examples/elt-pipeline" in line for line in lines), lines
    tables = ["orders", "customers", "payments"]
    execution_id = api.request(
        "POST", "/executions/examples/elt-pipeline", json_body={"tables": tables}
    )["id"]
    ended = wait_until(
        lambda: (e := execution(api, execution_id)) and e["state"]["current"] in TERMINAL and e,
        DEADLINE_S,
    )
    assert ended["state"]["current"] == "SUCCESS", json.dumps(ended, indent=1)[:4000]
    runs = runs_by_task(ended)
    # The for-each ran its body once per table, each run carrying its table.
    assert sorted(run["value"] for run in runs["load-table"]) == sorted(tables)
    # The reusable SQL flow ran as a subflow and its outputs came back.
    (call,) = runs["build-report"]
    assert call["outputs"]["state"] == "SUCCESS"
    assert "select" in call["outputs"]["outputs"]["statement"].lower()
    child = execution(api, call["outputs"]["executionId"])
    assert child is not None and child["flowId"] == "run-sql"
    assert ended["outputs"]["tables_loaded"] == len(tables)
    assert ended["outputs"]["report_statement"] == call["outputs"]["outputs"]["statement"]
    # Both extracts ran in the parallel branch, on the first attempt or after a retry.
    assert {"extract-orders", "extract-customers"} <= set(runs)


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
