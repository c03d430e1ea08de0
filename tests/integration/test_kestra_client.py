"""Kestra's own Python client, kestrapy, drives a headrace gateway (issue #13, item 5).

kestrapy puts Kestra's tenant in every path (`/api/v1/main/...`): it creates a flow from
YAML, starts executions with multipart inputs (`wait=true`), reads them back, searches
executions and flows, lists a namespace's flows and kills a running execution, with a
bearer token and with basic auth. Plain HTTP calls check the answer shapes themselves,
the routes without a tenant, and the answer to a tenant headrace does not have.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kestrapy import Configuration, KestraClient
from kestrapy.exceptions import ApiException, ForbiddenException, NotFoundException
from kestrapy.models.label import Label
from kestrapy.models.query_filter_field import QueryFilterField as Field
from kestrapy.models.query_filter_op import QueryFilterOp
from kestrapy.models.state_history import StateHistory
from kestrapy.models.state_type import StateType
from kestrapy.query import eq, filter_, in_

from headrace.config import Settings
from headrace.local import LocalStack
from headrace.passwords import hash_password
from tests.integration.stacks import running_stack

TENANT = "main"
NAMESPACE = f"test.kestra{uuid.uuid4().hex[:8]}"
WRITER = ("ana", "ana-password-0123")
READER = ("rui", "rui-password-0123")
DEADLINE_S = 60.0
GREET = f"""\
id: greet
namespace: {NAMESPACE}
labels:
  team: data
inputs:
  - id: name
    type: STRING
  - id: times
    type: INT
    defaults: 1
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "Hello {{{{ inputs.name }}}} x{{{{ inputs.times }}}}"
outputs:
  - id: greeting
    type: STRING
    value: "{{{{ outputs.hello.value }}}}"
"""
SLEEPER = f"""\
id: sleeper
namespace: {NAMESPACE}
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT10M
"""
# In a namespace of its own: the searches count the module namespace's flows.
APPROVALS = f"test.approvals{uuid.uuid4().hex[:8]}"
APPROVAL = f"""\
id: approval
namespace: {APPROVALS}
tasks:
  - id: wait_for_approval
    type: io.kestra.plugin.core.flow.Pause
    onResume:
      - id: approved
        type: BOOLEAN
      - id: reason
        type: STRING
        defaults: none given
  - id: decided
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ outputs.wait_for_approval.onResume.approved }}}}:{{{{ outputs.wait_for_approval.onResume.reason }}}}"
"""
CHILD_NAMESPACE_FLOW = f"""\
id: below
namespace: {NAMESPACE}.child
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: below
"""


def _credentials_toml() -> str:
    return "\n".join(
        f'[[users]]\nname = "{name}"\nrole = "{role}"\npassword = "{hash_password(password)}"\n'
        for (name, password), role in ((WRITER, "writer"), (READER, "reader"))
    )


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Basic-auth users beside the session's token: kestrapy takes either.
    path = tmp_path_factory.mktemp("kestra-auth") / "credentials.toml"
    path.write_text(_credentials_toml())
    services = ("indexer", "executor", "worker", "gateway")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADRACE_CREDENTIALS_FILE", str(path))
        with running_stack(settings, tmp_path_factory, "kestra-logs", services) as stack:
            yield stack


@pytest.fixture(scope="module")
def kestra(stack: LocalStack, api_token: str) -> KestraClient:
    """kestrapy as its README configures a bearer token."""
    return KestraClient(host=stack.url, token=api_token, timeout=90)


@pytest.fixture(scope="module")
def flows(kestra: KestraClient) -> dict[str, Any]:
    """The module's flows, created through kestrapy from their YAML."""
    return {
        source.split("\n", 1)[0].removeprefix("id: "): kestra.flows.create_flow(TENANT, source)
        for source in (GREET, SLEEPER, CHILD_NAMESPACE_FLOW)
    }


def _basic(stack: LocalStack, user: tuple[str, str]) -> KestraClient:
    """kestrapy as its README configures basic auth."""
    configuration = Configuration(host=stack.url, username=user[0], password=user[1])
    return KestraClient(configuration, timeout=90)


def _http(
    stack: LocalStack, method: str, path: str, token: str, body: bytes | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(
        stack.url + path, data=body, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _state_of(kestra: KestraClient, execution_id: str) -> StateType | None:
    try:
        return kestra.executions.execution(execution_id, TENANT).state.current
    except NotFoundException:  # not indexed yet
        return None


def _wait_for_state(kestra: KestraClient, execution_id: str, wanted: StateType) -> None:
    """Read the execution back until it is `wanted`; fail past the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    seen = _state_of(kestra, execution_id)
    while seen != wanted:
        assert time.monotonic() < deadline, f"{execution_id} is {seen}, never {wanted}"
        time.sleep(0.2)
        seen = _state_of(kestra, execution_id)


# ------------------------------------------------------------------ kestrapy


def test_kestrapy_creates_a_flow_from_yaml_and_reads_it_back(
    kestra: KestraClient, flows: dict[str, Any]
) -> None:
    created = flows["greet"]
    assert (created.namespace, created.id, created.revision) == (NAMESPACE, "greet", 1)
    assert created.source == GREET and created.disabled is False and created.deleted is False
    assert created.labels == [Label(key="team", value="data")]
    read = kestra.flows.flow(NAMESPACE, "greet", TENANT)
    assert read.revision == 1 and read.source is None  # Kestra's default: no source
    assert [task.id for task in read.tasks] == ["hello"]
    assert kestra.flows.flow(NAMESPACE, "greet", TENANT, source=True).source == GREET
    with pytest.raises(ApiException) as exists:
        kestra.flows.create_flow(TENANT, GREET)
    assert exists.value.status == 409


def test_kestrapy_starts_an_execution_with_multipart_inputs_and_waits(
    kestra: KestraClient, flows: dict[str, Any]
) -> None:
    ended = kestra.executions.create_execution(
        TENANT,
        NAMESPACE,
        "greet",
        wait=True,
        labels=["origin:kestrapy"],
        inputs={"name": "kestra", "times": 3},  # a str part, and 3 JSON-encoded
    )
    assert ended.state.current is StateType.SUCCESS
    assert ended.inputs == {"name": "kestra", "times": 3}
    assert ended.additional_properties["outputs"] == {"greeting": "Hello kestra x3"}
    assert Label(key="origin", value="kestrapy") in ended.labels
    assert ended.original_id == ended.id and ended.deleted is False
    assert [h.state for h in ended.state.histories][-1] is StateType.SUCCESS
    assert ended.state.end_date >= ended.state.start_date
    assert ended.state.duration.startswith("PT")

    read = kestra.executions.execution(ended.id, TENANT)
    assert read.state.current is StateType.SUCCESS and read.flow_revision == 1
    [run] = read.task_run_list
    assert (run.task_id, run.execution_id, run.flow_id) == ("hello", ended.id, "greet")
    assert run.state.current is StateType.SUCCESS and run.namespace == NAMESPACE

    started = kestra.executions.create_execution(
        TENANT, NAMESPACE, "greet", inputs={"name": "later"}
    )
    assert started.state.current is StateType.CREATED and started.flow_id == "greet"
    _wait_for_state(kestra, started.id, StateType.SUCCESS)


def test_kestrapy_refusals_are_its_exceptions(kestra: KestraClient, flows: dict[str, Any]) -> None:
    with pytest.raises(ApiException) as invalid:  # `name` is required
        kestra.executions.create_execution(TENANT, NAMESPACE, "greet", inputs={"times": 2})
    assert invalid.value.status == 422 and "name" in invalid.value.body
    with pytest.raises(NotFoundException):
        kestra.executions.create_execution(TENANT, NAMESPACE, "nowhere")
    with pytest.raises(NotFoundException) as tenant:
        kestra.flows.search_flows("acme")
    assert "headrace has one tenant, 'main'" in tenant.value.body


def test_kestrapy_searches_executions_and_flows(
    kestra: KestraClient, flows: dict[str, Any]
) -> None:
    ended = kestra.executions.create_execution(
        TENANT, NAMESPACE, "greet", wait=True, labels=["run:searched"], inputs={"name": "s"}
    )
    found = kestra.executions.search_executions(
        TENANT,
        size=50,
        filters=[
            eq(Field.NAMESPACE, NAMESPACE),
            in_(Field.STATE, ["SUCCESS"]),
            eq(Field.LABELS, {"run": "searched"}),
        ],
    )
    assert found["total"] == 1 and [e["id"] for e in found["results"]] == [ended.id]
    assert {"key": "run", "value": "searched"} in found["results"][0]["labels"]
    none = kestra.executions.search_executions(
        TENANT,
        filters=[in_(Field.STATE, ["FAILED"]), eq(Field.NAMESPACE, NAMESPACE)],
    )
    assert none == {"results": [], "total": 0}
    by_flow = kestra.executions.search_executions_by_flow_id(TENANT, NAMESPACE, "greet", size=1)
    assert by_flow["total"] >= 1 and len(by_flow["results"]) == 1

    page = kestra.flows.search_flows(
        TENANT,
        size=10,
        sort=["id:desc"],
        filters=[filter_(Field.NAMESPACE, QueryFilterOp.PREFIX, NAMESPACE)],
    )
    assert page.total == 3 and [f.id for f in page.results] == ["sleeper", "greet", "below"]
    labelled = kestra.flows.search_flows(
        TENANT,
        filters=[
            eq(Field.NAMESPACE, NAMESPACE),
            eq(Field.LABELS, {"team": "data"}),
        ],
    )
    assert [f.id for f in labelled.results] == ["greet"] and labelled.total == 1


def test_kestrapy_lists_a_namespaces_flows(kestra: KestraClient, flows: dict[str, Any]) -> None:
    listed = kestra.flows.list_flows_by_namespace(NAMESPACE, TENANT)
    assert [flow.id for flow in listed] == ["greet", "sleeper"]  # not the child namespace's
    assert all(flow.source is None for flow in listed if hasattr(flow, "source"))
    assert kestra.flows.list_flows_by_namespace("nothing.here", TENANT) == []


def test_kestrapy_kills_a_running_execution(kestra: KestraClient, flows: dict[str, Any]) -> None:
    started = kestra.executions.create_execution(TENANT, NAMESPACE, "sleeper")
    _wait_for_state(kestra, started.id, StateType.RUNNING)
    killed = kestra.executions.kill_execution(started.id, TENANT)
    assert killed.id == started.id
    _wait_for_state(kestra, started.id, StateType.KILLED)
    with pytest.raises(ApiException) as again:  # it has ended: Kestra's 409 too
        kestra.executions.kill_execution(started.id, TENANT)
    assert again.value.status == 409


def test_kestrapy_resumes_a_paused_execution_with_its_on_resume_inputs(
    kestra: KestraClient, flows: dict[str, Any]
) -> None:
    kestra.flows.create_flow(TENANT, APPROVAL)
    started = kestra.executions.create_execution(TENANT, APPROVALS, "approval")
    _wait_for_state(kestra, started.id, StateType.PAUSED)
    with pytest.raises(ApiException) as refused:  # `approved` is required
        kestra.executions.resume_execution(started.id, TENANT, {"reason": "looks good"})
    assert refused.value.status == 409 and "approved" in str(refused.value.body)
    resumed = kestra.executions.resume_execution(
        started.id, TENANT, {"approved": True, "reason": "looks good"}
    )
    assert resumed.id == started.id
    _wait_for_state(kestra, started.id, StateType.SUCCESS)
    execution = kestra.executions.execution(started.id, TENANT)
    (decided,) = [run for run in execution.task_run_list if run.task_id == "decided"]
    # kestrapy's TaskRun model has no `outputs`: Kestra's JSON keeps them all the same.
    assert decided.additional_properties["outputs"] == {"value": "true:looks good"}


def test_kestra_1x_resume_path_resumes_rather_than_starting_a_flow(
    stack: LocalStack, kestra: KestraClient, api_token: str
) -> None:
    """`POST /api/v1/main/executions/{id}/resume` has the shape of a start
    (`/executions/{namespace}/{flowId}`): the resume must win."""
    kestra.flows.update_flow(APPROVALS, "approval", TENANT, APPROVAL)
    started = kestra.executions.create_execution(TENANT, APPROVALS, "approval")
    _wait_for_state(kestra, started.id, StateType.PAUSED)
    path = f"/api/v1/{TENANT}/executions/{started.id}/resume"
    status, body = _http(stack, "POST", path, api_token, b"approved=false&reason=no")
    assert status == 200 and body["id"] == started.id, body
    _wait_for_state(kestra, started.id, StateType.SUCCESS)


def test_kestrapy_with_basic_auth_keeps_roles_and_browser_checks(
    stack: LocalStack, kestra: KestraClient, flows: dict[str, Any]
) -> None:
    """Basic auth reads, writes flows (YAML bodies) and kills; a start's multipart body
    is what any web page can make a browser send with cached basic credentials, so it
    takes a bearer token (docs/security.md), as every other form POST does."""
    writer, reader = _basic(stack, WRITER), _basic(stack, READER)
    assert [f.id for f in reader.flows.list_flows_by_namespace(NAMESPACE, TENANT)] == [
        "greet",
        "sleeper",
    ]
    below = CHILD_NAMESPACE_FLOW.replace("tasks:", "labels:\n  team: ops\ntasks:")
    updated = writer.flows.update_flow(f"{NAMESPACE}.child", "below", TENANT, below)
    assert updated.revision == 2 and updated.labels == [Label(key="team", value="ops")]
    with pytest.raises(ForbiddenException) as reader_write:
        reader.flows.update_flow(f"{NAMESPACE}.child", "below", TENANT, CHILD_NAMESPACE_FLOW)
    assert "needs the writer role" in reader_write.value.body
    with pytest.raises(ForbiddenException) as form_post:
        writer.executions.create_execution(TENANT, NAMESPACE, "greet", inputs={"name": "b"})
    assert "Authorization: Bearer" in form_post.value.body
    started = kestra.executions.create_execution(TENANT, NAMESPACE, "sleeper")
    _wait_for_state(kestra, started.id, StateType.RUNNING)
    assert writer.executions.kill_execution(started.id, TENANT).id == started.id
    _wait_for_state(kestra, started.id, StateType.KILLED)
    with pytest.raises(ApiException) as anonymous:
        KestraClient(host=stack.url).flows.search_flows(TENANT)
    assert anonymous.value.status == 401


# ------------------------------------------------------------------ the shapes, plainly


def test_the_routes_without_a_tenant_answer_kestras_shapes(
    stack: LocalStack, api_token: str, flows: dict[str, Any]
) -> None:
    status, page = _http(
        stack,
        "GET",
        f"/api/v1/executions/search?namespace={NAMESPACE}&flowId=greet&size=1",
        api_token,
    )
    assert status == 200 and set(page) == {"results", "total"} and len(page["results"]) == 1
    execution = page["results"][0]
    assert {
        "id",
        "namespace",
        "flowId",
        "flowRevision",
        "originalId",
        "deleted",
        "metadata",
    } <= set(execution)
    assert set(execution["state"]) >= {"current", "histories", "startDate", "endDate", "duration"}
    for history in execution["state"]["histories"]:
        StateHistory.from_dict(history)  # kestrapy's model, strictly
    for label in execution["labels"]:
        Label.from_dict(label)

    status, flows_page = _http(
        stack, "GET", f"/api/v1/flows/search?namespace={NAMESPACE}", api_token
    )
    assert status == 200 and flows_page["total"] == 3
    assert all("source" not in flow for flow in flows_page["results"])
    status, listed = _http(stack, "GET", f"/api/v1/flows/{NAMESPACE}", api_token)
    assert status == 200 and [f["id"] for f in listed] == ["greet", "sleeper"]
    assert listed[0]["labels"] == [{"key": "team", "value": "data"}]


def test_kill_on_kestra_1_paths_answers_202(
    stack: LocalStack, api_token: str, kestra: KestraClient, flows: dict[str, Any]
) -> None:
    for prefix in ("/api/v1", "/api/v1/main"):
        started = kestra.executions.create_execution(TENANT, NAMESPACE, "sleeper")
        _wait_for_state(kestra, started.id, StateType.RUNNING)
        status, body = _http(stack, "DELETE", f"{prefix}/executions/{started.id}/kill", api_token)
        assert status == 202 and body["id"] == started.id, body
        _wait_for_state(kestra, started.id, StateType.KILLED)
        status, body = _http(stack, "DELETE", f"{prefix}/executions/{started.id}/kill", api_token)
        assert status == 409 and "cannot kill" in body["message"]
    status, body = _http(
        stack, "DELETE", "/api/v1/executions/x/kill?isOnKillCascade=false", api_token
    )
    assert status == 400 and "subflows" in body["message"]


def test_another_tenant_is_a_404_that_names_main(stack: LocalStack, api_token: str) -> None:
    for path in ("/api/v1/acme/executions/search", f"/api/v1/acme/flows/{NAMESPACE}/greet"):
        status, body = _http(stack, "GET", path, api_token)
        assert status == 404 and "'main'" in body["message"], (path, body)


def test_unsupported_filters_are_refused_not_dropped(stack: LocalStack, api_token: str) -> None:
    status, body = _http(stack, "GET", "/api/v1/executions/search?filters[q][EQUALS]=x", api_token)
    assert status == 400 and "supported" in body["message"] and "namespace" in body["message"]
    status, body = _http(
        stack, "GET", "/api/v1/main/executions/search?filters[state][CONTAINS]=S", api_token
    )
    assert status == 400 and "CONTAINS" in body["message"]


DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"


def test_the_documented_kestrapy_example_runs(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/api.md's kestrapy example, on this module's gateway, in a namespace of its own."""
    [code] = [
        c for c in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL) if "kestrapy" in c
    ]
    namespace = f"{NAMESPACE}doc"
    flow = tmp_path / "hello.yaml"
    flow.write_text(HELLO.read_text().replace("namespace: examples", f"namespace: {namespace}"))
    code = (
        code.replace('"http://localhost:8080"', repr(stack.url))
        .replace('"examples/hello.yaml"', repr(str(flow)))
        .replace('"examples"', repr(namespace))
    )
    exec(compile(code, str(DOC), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["SUCCESS ['greet', 'count', 'report']", "1 execution(s) in examples"]
