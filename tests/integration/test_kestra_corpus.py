"""The Kestra corpus end to end: every flow of `tests/kestra/flows` applied at once, each
started (all at the same time), and each execution checked against the end Kestra
documents for it (`tests/kestra/expected.yaml`): its state, its task runs' states,
outputs, the flow's outputs and log lines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until
from tests.kestra.corpus import NAMESPACE, Case, cases

END_S = 120  # the slowest flow of the corpus ends within seconds


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "kestra-corpus-logs") as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    return ApiClient(stack.url, timeout_s=END_S + 30)


@pytest.fixture(scope="module")
def ended(api: ApiClient) -> dict[str, dict[str, Any]]:
    """Every case's ended execution, by file: applied in one request, run at once."""
    flows = [{"name": case.file, "source": case.source} for case in cases()]
    api.apply_flows(flows)
    runnable = [case for case in cases() if case.run]
    with ThreadPoolExecutor(max_workers=len(runnable)) as pool:
        executions = pool.map(lambda case: _run(api, case), runnable)
        return dict(zip([case.file for case in runnable], executions, strict=True))


def _run(api: ApiClient, case: Case) -> dict[str, Any]:
    if case.resume is None:
        return api.start_execution(
            NAMESPACE, case.flow_id, case.inputs, wait=True, timeout=END_S, timeout_s=END_S + 30
        )
    started = api.start_execution(NAMESPACE, case.flow_id, case.inputs)
    execution_id = started["id"]
    wait_until(lambda: _in(api, execution_id, ("PAUSED",)), END_S, f"{case.file} to pause")
    api.resume_execution(execution_id, case.resume)
    ends = ("SUCCESS", "WARNING", "FAILED", "KILLED")
    return wait_until(lambda: _in(api, execution_id, ends), END_S, f"{case.file} to end")


def _in(api: ApiClient, execution_id: str, states: tuple[str, ...]) -> dict[str, Any] | None:
    """The execution once in one of `states`; None before (or while not indexed yet)."""
    try:
        execution = api.get_execution(execution_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return execution if execution["state"]["current"] in states else None


@pytest.mark.parametrize("case", [c for c in cases() if c.run], ids=lambda c: c.file)
def test_the_flow_ends_as_kestra_documents(
    case: Case, ended: dict[str, dict[str, Any]], api: ApiClient
) -> None:
    execution = ended[case.file]
    runs = defaultdict(list)
    for run in execution["taskRunList"]:
        runs[run["taskId"]].append(run)
    assert execution["state"]["current"] == case.state, _summary(execution)
    for task_id, state in case.tasks.items():
        assert runs[task_id], f"{task_id} never ran: {_summary(execution)}"
        assert {run["state"]["current"] for run in runs[task_id]} == {state}, _summary(execution)
    for task_id in case.absent:
        assert task_id not in runs, f"{task_id} ran: {_summary(execution)}"
    for task_id, count in case.runs.items():
        assert len(runs[task_id]) == count
    for task_id, outputs in case.outputs.items():
        (run,) = runs[task_id]
        assert {key: run["outputs"].get(key) for key in outputs} == outputs
    if case.flow_outputs is not None:
        assert execution["outputs"] == case.flow_outputs
    for task_id, lines in case.logs.items():
        present = lines["present"]
        messages = wait_until(
            lambda t=task_id, p=present: _messages(api, execution["id"], t, p),
            30,
            f"the lines of {task_id}",
        )
        for line in lines.get("absent", []):
            assert line not in messages


def _messages(api: ApiClient, execution_id: str, task_id: str, present: list[str]) -> list[str]:
    messages = [line["message"] for line in api.list_logs(execution_id, task_id=task_id)]
    return messages if all(line in messages for line in present) else []


def _summary(execution: dict[str, Any]) -> str:
    runs = ", ".join(f"{r['taskId']}={r['state']['current']}" for r in execution["taskRunList"])
    return f"{execution['state']['current']}: {runs}"
