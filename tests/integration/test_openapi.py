"""The OpenAPI document (headrace/openapi.py) against the gateway it describes.

- It names exactly the routes the gateway registers, with their roles, and it is valid
  OpenAPI 3.1.
- The typed client (headrace/api.py) has a method per operation, and calling each of
  them against a live gateway reaches every route.
- schemathesis sends a live gateway (with the executor, a worker and the indexer, so
  that commands are answered and executions end) requests generated from the document:
  none gets a 5xx, and every answer is one the document describes (status, media type,
  body schema).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import openapi_spec_validator
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from headrace.api import API_PREFIX, ApiOperations
from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.local import LocalStack
from headrace.openapi import OPERATIONS, PATH, openapi_document
from headrace.services.gateway import make_app
from headrace.services.gateway.app import PUBLIC_ROUTES, READ_ONLY_POSTS
from headrace.services.gateway.auth import Authenticator
from headrace.services.gateway.browser import HostPolicy
from headrace.services.gateway.context import Gateway
from headrace.services.gateway.credentials import Credentials
from headrace.storage import Storage
from tests.integration.stacks import running_stack

HOW_TO_ADD = (
    "each route of the gateway needs an `Operation(method, path, operationId, …)` in "
    "headrace/openapi.py OPERATIONS (path spelt as aiohttp's pattern), and a method named "
    "after its operationId (snake_case) in headrace/api.py ApiOperations"
)
TRANSPORT = frozenset({"request", "download", "upload", "events"})


def gateway_routes() -> set[tuple[str, str]]:
    """(method, path pattern) of every route the gateway's application registers. HEAD
    is aiohttp's implicit twin of each GET: not an operation of its own."""
    app = make_app(
        cast(Gateway, None),  # the handlers are not called: the router is all we read
        Authenticator(Credentials()),
        HostPolicy(frozenset({"localhost"})),
    )
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


# ------------------------------------------------------------------ the document


def test_the_document_names_every_route_and_no_other() -> None:
    documented = {(op.method, op.path) for op in OPERATIONS}
    routes = gateway_routes()
    undocumented = sorted(routes - documented)
    unrouted = sorted(documented - routes)
    assert not undocumented, f"routes the OpenAPI document lacks: {undocumented}; {HOW_TO_ADD}"
    assert not unrouted, f"operations of the OpenAPI document no route has: {unrouted}"


def test_the_document_is_valid_openapi_with_unique_operation_ids() -> None:
    document = openapi_document()
    openapi_spec_validator.validate(document)
    ids = [op.operation_id for op in OPERATIONS]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert document["openapi"].startswith("3.1")
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["basicAuth"] == {**schemes["basicAuth"], "type": "http", "scheme": "basic"}


def test_roles_and_public_operations_are_the_gateways() -> None:
    """Public operations are the routes the gateway lets through without credentials;
    a reader may call GET operations and the read-only POSTs, nothing else."""
    document = openapi_document()
    for op in OPERATIONS:
        described = document["paths"][op.path][op.method.lower()]
        public = op.path in PUBLIC_ROUTES
        assert (op.role == "public") == public, (op.operation_id, op.role)
        assert (described.get("security") == []) == public, op.operation_id
        assert ("401" in described["responses"]) != public, op.operation_id
        if not public:
            reads = op.method == "GET" or op.path in READ_ONLY_POSTS
            assert op.role == ("reader" if reads else "writer"), (op.operation_id, op.role)


def test_every_operation_has_a_client_method_and_every_method_an_operation() -> None:
    # Kestra's aliases are for Kestra's clients (tests/integration/test_kestra_client.py);
    # the web UI's page and files for browsers (tests/integration/test_ui_routes.py).
    wanted = {op.client_method for op in OPERATIONS if not op.kestra and not op.ui}
    methods = {
        name
        for name, value in vars(ApiOperations).items()
        if callable(value) and not name.startswith("_") and name not in TRANSPORT
    }
    missing = sorted(wanted - methods)
    assert not missing, f"operations without a client method: {missing}; {HOW_TO_ADD}"
    stale = sorted(methods - wanted)
    assert not stale, f"client methods that are no operation of the document: {stale}"
    for name in wanted:
        assert (getattr(ApiClient, name).__doc__ or "").strip(), f"{name} has no docstring"


# ------------------------------------------------------------------ a live gateway

NAMESPACE = f"test.openapi{uuid.uuid4().hex[:8]}"
KEY = "openapi-key-0123456789abcdef"
FLOW = f"""\
id: target
namespace: {NAMESPACE}
inputs:
  - {{id: name, type: STRING, defaults: world}}
tasks:
  - id: greet
    type: log
    message: "hi {{{{ inputs.name }}}}"
triggers:
  - {{id: tick, type: schedule, cron: "0 0 * * *"}}
  - {{id: hook, type: webhook, key: {KEY}}}
"""
FILE_DATA = b"id,amount\n1,30\n"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The executor answers commands, the worker ends executions (so that `wait=true` and
    # the live streams end), the indexer makes them readable; no scheduler: nothing here
    # must start on its own.
    services = ("indexer", "executor", "worker", "gateway")
    with running_stack(settings, tmp_path_factory, "openapi-logs", services) as stack:
        yield stack


@dataclasses.dataclass(frozen=True)
class Seeded:
    """What the module's gateway holds: a flow, one ended execution, one file of it."""

    execution_id: str
    task_run_id: str
    file_uri: str


@pytest.fixture(scope="module")
def seeded(stack: LocalStack, settings: Settings) -> Seeded:
    api = ApiClient(stack.url, timeout_s=60)
    api.put_flow(NAMESPACE, "target", FLOW)
    execution = api.start_execution(NAMESPACE, "target", wait=True, timeout=60, timeout_s=70)
    assert execution["state"]["current"] == "SUCCESS", execution
    run = execution["taskRunList"][0]
    storage = Storage(Path(settings.storage_dir or ""))
    uri = storage.task_file_uri(NAMESPACE, "target", execution["id"], "greet", run["id"], "a.csv")
    with storage.writer(uri) as out:
        out.write(FILE_DATA)
    return Seeded(execution["id"], run["id"], uri)


def _pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


# Most literal characters first: `/executions/{id}/kill` before `/executions/{ns}/{flow}`,
# as the gateway's routes are registered.
_MATCHERS = [
    (op.method, _pattern(op.path), op.operation_id)
    for op in sorted(OPERATIONS, key=lambda op: -len(re.sub(r"\{[^}]+\}", "", op.path)))
]


def operation_of(method: str, path: str) -> str:
    for op_method, pattern, operation_id in _MATCHERS:
        if op_method == method and pattern.match(path):
            return operation_id
    raise AssertionError(f"{method} {path} is no operation of the document")


@dataclasses.dataclass
class RecordingClient(ApiClient):
    """An `ApiClient` noting the operation of each request it sends."""

    called: set[str] = dataclasses.field(default_factory=set)

    @contextlib.contextmanager
    def _open(self, method: str, path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        prefix = args[4] if len(args) > 4 else kwargs.get("prefix", API_PREFIX)
        self.called.add(operation_of(method, prefix + path))
        with super()._open(method, path, *args, **kwargs) as response:
            yield response


def _refused(status: int, call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as refusal:
        call(*args)
    assert refusal.value.status == status, refusal.value
    return refusal.value


def test_the_typed_client_reaches_every_operation(stack: LocalStack, seeded: Seeded) -> None:
    api = RecordingClient(stack.url, timeout_s=60)
    ns = NAMESPACE

    # The service's own routes.
    assert api.get_open_api() == openapi_document()
    assert api.get_api_index()["api"] == API_PREFIX
    assert api.get_health() == {"status": "ok"}
    assert api.get_readiness() == {"status": "ready"}
    assert "headrace_executions_stuck" in api.get_metrics()
    assert api.get_flow_schema()["type"] == "object"
    assert "log" in {plugin["type"] for plugin in api.list_plugins()}
    assert api.get_plugin("log")["type"] == "log"

    # Flows.
    second = FLOW.replace("id: target", "id: second").replace(
        f"key: {KEY}", "key: other-key-0123456789abcdef"
    )
    validation = api.validate_flow(second)
    assert validation["valid"] is True, validation["errors"]
    assert api.create_flow(second)["revision"] == 1
    updated = api.put_flow(ns, "second", second.replace("hi ", "hello "))
    assert updated["revision"] == 2 and "hello " in updated["source"]
    assert "hi " in api.get_flow(ns, "second", revision=1)["source"]
    assert [r["revision"] for r in api.list_flow_revisions(ns, "second")] == [1, 2]
    assert '+    message: "hello ' in api.diff_flow_revisions(ns, "second", 1, 2)["diff"]
    third = [{"name": "third.yaml", "source": second.replace("id: second", "id: third")}]
    plan = api.apply_flows(third, dry_run=True)
    assert plan["dryRun"] is True and plan["summary"]["created"] == 1
    assert api.apply_flows(third)["flows"][0]["action"] == "created"
    assert {f["id"] for f in api.list_flows(ns)["results"]} == {"target", "second", "third"}
    api.delete_flow(ns, "second")
    _refused(404, api.get_flow, ns, "second")

    # Executions and their logs, files and commands.
    started = api.start_execution(ns, "target", {"name": "typed"}, labels={"team": "api"})
    assert started["state"]["current"] == "CREATED" and started["labels"] == {"team": "api"}
    events = list(api.follow_execution(started["id"]))
    assert events[-1].event == "end" and json.loads(events[-1].data)["state"] == "SUCCESS"
    lines = [json.loads(e.data) for e in api.follow_logs(started["id"]) if e.event == "log"]
    assert [line["message"] for line in lines] == ["hi typed"]
    execution = api.get_execution(started["id"])
    assert execution["state"]["current"] == "SUCCESS"
    listed = api.list_executions(ns, "target", state=["SUCCESS"], size=100)
    assert started["id"] in {item["id"] for item in listed["results"]}
    assert [line["message"] for line in api.list_logs(started["id"], min_level="INFO")] == [
        "hi typed"
    ]
    with api.download_logs(started["id"], task_id="greet") as body:
        assert b"hi typed" in body.read(1 << 20)
    metas = api.get_execution_file_metas(seeded.execution_id, seeded.file_uri)
    assert metas == {"uri": seeded.file_uri, "name": "a.csv", "size": len(FILE_DATA)}
    with api.download_execution_file(seeded.execution_id, seeded.file_uri) as body:
        assert body.read(1 << 20) == FILE_DATA
    for command in (api.kill_execution, api.restart_execution, api.resume_execution):
        # It ended SUCCESS: the executor refuses each of them, and says why.
        assert "cannot" in str(_refused(409, command, started["id"]))
    replay = api.replay_execution(started["id"])
    assert replay["replayOf"] == started["id"] and replay["id"] != started["id"]

    # Webhooks: no credentials needed, the key is the secret.
    hooked = api.post_webhook(ns, "target", KEY, {"ref": "main"})
    assert hooked["flowId"] == "target" and hooked["state"]["current"] == "CREATED"
    assert api.get_webhook(ns, "target", KEY, params={"ref": "x"})["flowId"] == "target"
    _refused(404, api.post_webhook, ns, "target", "wrong-key")

    # Triggers.
    triggers = {t["triggerId"]: t for t in api.list_triggers(ns, "target")["results"]}
    assert set(triggers) == {"tick", "hook"} and triggers["tick"]["cron"] == "0 0 * * *"
    assert api.set_trigger(ns, "target", "tick", disabled=True)["runtimeDisabled"] is True
    assert api.set_trigger(ns, "target", "tick", disabled=False)["runtimeDisabled"] is False
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = (
        (midnight - timedelta(days=2)).isoformat(),
        (midnight - timedelta(days=1)).isoformat(),
    )
    backfill = api.backfill_trigger(ns, "target", "tick", start, end)
    assert backfill["count"] == 1 and len(backfill["executionIds"]) == 1

    # Namespace files.
    entry = api.upload_namespace_file(ns, "dir/a.csv", io.BytesIO(FILE_DATA))
    assert entry["size"] == len(FILE_DATA)
    listed_files = api.list_namespace_files(ns, recursive=True, sha256=True)
    assert {f["fileName"] for f in listed_files} == {"dir", "dir/a.csv"}
    with api.download_namespace_file(ns, "dir/a.csv") as body:
        assert body.read(1 << 20) == FILE_DATA
    assert api.delete_namespace_file(ns, "dir")["deletedFiles"] == 1

    # What the web UI asks besides: namespaces, who it is, the dashboard and blueprints.
    assert {"namespace": ns, "flows": 2} in api.list_namespaces()["results"]
    assert api.get_me()["role"] == "writer"
    stats = api.get_stats(hours=1)
    assert stats["states"].get("SUCCESS", 0) >= 1 and stats["workers"]["configured"] is False
    assert "hello" in {b["id"] for b in api.list_blueprints()["results"]}
    assert api.get_blueprint("hello")["flowId"] == "hello"
    copied = api.copy_blueprint("hello", ns, "from-blueprint")
    assert (copied["namespace"], copied["id"], copied["revision"]) == (ns, "from-blueprint", 1)

    wanted = {op.operation_id for op in OPERATIONS if not op.kestra and not op.ui}
    missed = sorted(wanted - api.called)
    assert not missed, f"operations no typed method reached: {missed}"


# ------------------------------------------------------------------ schemathesis

# Generated cases per operation (fuzzing), on top of the documented examples: enough to
# find a handler that fails on an edge value, few enough to run in well under a minute.
# `HEADRACE_API_EXAMPLES=200 HEADRACE_API_PHASES=examples,coverage,fuzzing` searches longer,
# with the coverage phase's boundary and invalid values too.
MAX_EXAMPLES = int(os.environ.get("HEADRACE_API_EXAMPLES", "8"))
PHASES = os.environ.get("HEADRACE_API_PHASES", "examples,fuzzing").split(",")
MODE = os.environ.get("HEADRACE_API_MODE", "positive")
# Every answer must be one the document describes: no 5xx, a documented status, media
# type and body, documented response headers.
CHECKS_TO_RUN = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
NAMESPACE_FILE = "data.txt"


def _with_examples(document: dict[str, Any], seeded: Seeded) -> dict[str, Any]:
    """The document with examples naming what this module's gateway holds, so that the
    examples phase gets past the lookups (the flow, the execution, its file, the key)
    into the handlers' own work. Only in this test: the served document names nothing
    of an installation."""
    by_name = {
        "namespace": NAMESPACE,
        "flowId": "target",
        "executionId": seeded.execution_id,
        "key": KEY,
        "triggerId": "tick",
        "type": "log",
        "taskRunId": seeded.task_run_id,
    }
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                example = by_name.get(name)
                if name == "id":
                    flows = path.startswith(f"{API_PREFIX}/flows/")
                    # Not the flow the other operations need: deleting it would leave them 404.
                    deleted = "hello" if method == "delete" else "target"
                    example = deleted if flows else seeded.execution_id
                elif name == "path" and parameter["in"] == "query":
                    example = NAMESPACE_FILE if "/namespaces/" in path else seeded.file_uri
                if example is not None:
                    parameter["example"] = example
    # The documented flow, in this module's namespace (not `examples`, which other tests use).
    flow = document["components"]["schemas"]["FlowSource"]["example"]
    flow["namespace"] = NAMESPACE
    return document


@pytest.fixture
def api_schema(stack: LocalStack, seeded: Seeded, api_token: str) -> Any:
    # The document as the gateway serves it, fetched without credentials as tools do.
    document = ApiClient(stack.url, token="").get_open_api()
    api = ApiClient(stack.url)
    with contextlib.suppress(ApiError):  # a previous run of the module's fixture
        api.delete_namespace_file(NAMESPACE, NAMESPACE_FILE)
    api.upload_namespace_file(NAMESPACE, NAMESPACE_FILE, io.BytesIO(FILE_DATA))
    config = schemathesis.Config.from_dict(
        {
            "base-url": stack.url,
            "headers": {"Authorization": f"Bearer {api_token}"},
            # A live stream ends about a second after its execution; a `wait=true` start
            # waits `timeout` (capped below). Past this, the gateway hangs: a failure.
            "request-timeout": 20,
            "seed": 12,  # derandomized: CI sees the same requests every run
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "mode": MODE},
            "phases": {
                phase: {"enabled": phase in PHASES}
                for phase in ("examples", "coverage", "fuzzing", "stateful")
            },
        }
    )
    return schemathesis.openapi.from_dict(_with_examples(document, seeded), config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers_and_no_5xx(case: schemathesis.Case) -> None:
    if case.query and "wait" in case.query:
        # A start that waits for its end holds the request up to `timeout` (300 s by
        # default): one second tells whether waiting works, as well.
        case.query["timeout"] = "1"
    case.call_and_validate(checks=CHECKS_TO_RUN)


def test_the_document_is_served_to_anyone_and_to_other_origins(stack: LocalStack) -> None:
    request = urllib.request.Request(stack.url + PATH)  # no credentials
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        # A Swagger UI served from elsewhere may load it; nothing else answers CORS.
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert json.loads(response.read()) == openapi_document()


@pytest.mark.parametrize(
    "path",
    [
        f"/executions/{NAMESPACE}/target",
        f"/executions/webhook/{NAMESPACE}/target/{KEY}",
        f"/namespaces/{NAMESPACE}/files?path=upload.txt",
    ],
)
def test_a_form_part_header_that_is_not_text_is_a_400(
    stack: LocalStack, seeded: Seeded, auth_headers: dict[str, str], path: str
) -> None:
    """schemathesis found it: a multipart field name holding raw non-UTF-8 bytes made
    aiohttp's part parser raise an error that was no ValueError, answered 500."""
    body = (
        b'--b\r\nContent-Disposition: form-data; name="\xf3\xaf\xac\x8b\x18"\r\n\r\nx\r\n--b--\r\n'
    )
    headers = {**auth_headers, "Content-Type": "multipart/form-data; boundary=b"}
    request = urllib.request.Request(
        f"{stack.url}{API_PREFIX}{path}", data=body, headers=headers, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)
    assert answer.value.code == 400
    assert "malformed multipart/form-data body" in json.loads(answer.value.read())["message"]


DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello.yaml"


def test_the_documented_client_example_runs(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/api.md's Python example, on this module's gateway and namespace."""
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)[0]
    flow = tmp_path / "hello.yaml"
    flow.write_text(HELLO.read_text().replace("namespace: examples", f"namespace: {NAMESPACE}"))
    code = (
        code.replace('"http://localhost:8080"', repr(stack.url))
        .replace('"examples/hello.yaml"', repr(str(flow)))
        .replace('"examples"', repr(NAMESPACE))
    )
    exec(compile(code, str(DOC), "exec"), {})
    printed = capsys.readouterr().out
    assert "log " in printed and "Hello, api!" in printed
    assert "SUCCESS {" in printed
