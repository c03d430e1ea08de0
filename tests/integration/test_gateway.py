"""The REST gateway over a real socket, a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer

from headrace import codec, flow_files
from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.db.executions import ExecutionRepository
from headrace.db.indexing import write_batch
from headrace.db.logs import LogRepository
from headrace.db.pool import create_pool
from headrace.flow_log import FlowLog
from headrace.flow_schema import MEDIA_TYPE, flow_json_schema
from headrace.flow_store import FlowStore
from headrace.kafka import make_consumer, make_producer
from headrace.messages import (
    CommandKind,
    ExecutionCommand,
    ExecutionEvent,
    ExecutionSnapshot,
    LogLevel,
    LogRecord,
    Message,
    StateChange,
    TriggerEvent,
)
from headrace.plugins import plugins
from headrace.services.gateway import make_app
from headrace.services.gateway.auth import Authenticator
from headrace.services.gateway.browser import HostPolicy
from headrace.services.gateway.context import Gateway
from headrace.services.gateway.credentials import load_credentials
from headrace.services.gateway.ids import ID_LENGTH
from headrace.services.gateway.waiter import ExecutionWaiter
from headrace.states import State
from headrace.topics.definitions import EXECUTION_COMMANDS
from tests.integration.stacks import in_process_gateway

DEADLINE_S = 20.0
YAML = {"Content-Type": "application/x-yaml"}


def flow_yaml(namespace: str, flow_id: str = "hello", message: str = "hi") -> str:
    return f"""\
id: {flow_id}
namespace: {namespace}
inputs:
  - id: count
    type: INT
  - id: name
    type: STRING
    defaults: world
tasks:
  - id: greet
    type: log
    message: "{message} {{{{ inputs.name }}}}"
"""


@pytest.fixture(scope="module")
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str, auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as session:
        yield session


@pytest.fixture(scope="module")
async def pool(database_url: str, base_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)  # the gateway has migrated
    yield pool
    await pool.close()


@pytest.fixture
def namespace() -> str:
    return f"test.gw{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def triggers(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = make_consumer(settings, "triggers", group_id=None, client_id="test-gateway")
    await consumer.start()
    yield consumer
    await consumer.stop()


async def next_trigger(
    consumer: AIOKafkaConsumer, execution_id: str | None = None, namespace: str | None = None
) -> TriggerEvent:
    """The first trigger on the (shared) topic with this execution id or namespace."""
    async with asyncio.timeout(DEADLINE_S):
        async for record in consumer:
            message = codec.decode(record.value)
            if isinstance(message, TriggerEvent) and (
                message.execution_id == execution_id or message.namespace == namespace
            ):
                return message
    raise AssertionError("unreachable")


async def json_of(response: aiohttp.ClientResponse) -> Any:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


async def test_healthz(http: aiohttp.ClientSession) -> None:
    async with http.get("/healthz") as response:
        assert response.status == 200
        assert await json_of(response) == {"status": "ok"}


async def test_plugins_lists_and_describes_task_types(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/v1/plugins") as response:
        assert response.status == 200
        assert await response.json() == [plugin.to_json() for plugin in plugins()]
    async with http.get("/api/v1/plugins/io.kestra.plugin.core.log.Log") as response:
        assert response.status == 200
        body = await response.json()
    assert body["type"] == "log" and body["properties"]["required"] == ["message"]
    async with http.get("/api/v1/plugins/lgo") as response:
        assert response.status == 404
        assert "unknown task type 'lgo'" in (await response.json())["message"]


async def test_the_flow_schema_is_served_to_a_caller_with_a_token(
    http: aiohttp.ClientSession, base_url: str
) -> None:
    async with http.get("/api/v1/flows/schema") as response:
        assert response.status == 200
        assert response.content_type == MEDIA_TYPE == "application/schema+json"
        assert await response.json(content_type=None) == flow_json_schema()
    async with (
        aiohttp.ClientSession(base_url) as anonymous,
        anonymous.get("/api/v1/flows/schema") as response,
    ):
        assert response.status == 401
        assert "Authorization: Bearer" in (await json_of(response))["message"]


async def test_flow_create_update_get_list_delete(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    source = flow_yaml(namespace)
    async with http.post("/api/v1/flows", data=source, headers=YAML) as response:
        assert response.status == 201
        body = await json_of(response)
        assert (body["namespace"], body["id"], body["revision"]) == (namespace, "hello", 1)
        assert body["source"] == source and body["tasks"][0]["id"] == "greet"
    async with http.post("/api/v1/flows", data=source, headers=YAML) as response:
        assert response.status == 409
        assert "already exists" in (await json_of(response))["message"]

    url = f"/api/v1/flows/{namespace}/hello"
    async with http.put(url, data=source, headers=YAML) as response:
        assert response.status == 200 and (await json_of(response))["revision"] == 1
    changed = flow_yaml(namespace, message="hello")
    async with http.put(url, data=changed, headers=YAML) as response:
        assert response.status == 201 and (await json_of(response))["revision"] == 2
    async with http.put(f"/api/v1/flows/{namespace}/other", data=changed, headers=YAML) as r:
        assert r.status == 422
        assert [e["path"] for e in (await json_of(r))["errors"]] == ["id"]

    async with http.get(url) as response:
        assert (await json_of(response))["source"] == changed
    async with http.get(url, params={"revision": "1"}) as response:
        assert (await json_of(response))["source"] == source
    async with http.get("/api/v1/flows", params={"namespace": namespace}) as response:
        listed = await json_of(response)
        assert [(f["id"], f["revision"]) for f in listed["results"]] == [("hello", 2)]

    async with http.delete(url) as response:
        assert response.status == 204
    async with http.get(url) as response:
        assert response.status == 404
        assert "not found" in (await json_of(response))["message"]
    async with http.delete(url) as response:
        assert response.status == 404


async def test_invalid_flow_is_422_with_path_and_line(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    source = f"id: bad\nnamespace: {namespace}\ntasks:\n  - id: a\n    type: log\n    retry: 3\n"
    async with http.post("/api/v1/flows", data=source, headers=YAML) as response:
        assert response.status == 422
        errors = (await json_of(response))["errors"]
        assert any(e["path"].startswith("tasks[0].retry") and e["line"] == 6 for e in errors)
    async with http.post("/api/v1/flows/validate", data=source, headers=YAML) as response:
        assert response.status == 200
        body = await json_of(response)
        assert body["valid"] is False
        assert any(e["path"].startswith("tasks[0].retry") for e in body["errors"])
    valid = flow_yaml(namespace)
    async with http.post("/api/v1/flows/validate", data=valid, headers=YAML) as response:
        assert await json_of(response) == {
            "valid": True,
            "errors": [],
            "warnings": [],
            "namespace": namespace,
            "id": "hello",
        }


async def test_wrong_content_type_and_oversize_body(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    async with http.post("/api/v1/flows", json={"id": "x"}) as response:
        assert response.status == 415
        assert "message" in await json_of(response)
    big = flow_yaml(namespace) + "#" * (1024 * 1024 + 1) + "\n"
    async with http.post("/api/v1/flows", data=big, headers=YAML) as response:
        assert response.status == 413
        assert "message" in await json_of(response)
    async with http.get("/api/v1/nowhere") as response:
        assert response.status == 404
        assert "message" in await json_of(response)


async def test_start_execution_publishes_a_trigger(
    http: aiohttp.ClientSession, namespace: str, triggers: AIOKafkaConsumer
) -> None:
    async with http.post("/api/v1/flows", data=flow_yaml(namespace), headers=YAML) as response:
        assert response.status == 201
    url = f"/api/v1/executions/{namespace}/hello"
    async with http.post(url, json={"count": "3"}, params={"labels": "team:data"}) as response:
        assert response.status == 202
        started = await json_of(response)
    assert len(started["id"]) == ID_LENGTH
    trigger = await next_trigger(triggers, started["id"])
    assert (trigger.namespace, trigger.flow_id, trigger.flow_revision) == (namespace, "hello", 1)
    assert trigger.inputs == {"count": 3, "name": "world"}
    assert trigger.trigger == {"type": "api"} and trigger.labels == {"team": "data"}

    # The same inputs as a form.
    async with http.post(url, data={"count": "4", "name": "form"}) as response:
        assert response.status == 202
        form_id = (await json_of(response))["id"]
    assert (await next_trigger(triggers, form_id)).inputs == {"count": 4, "name": "form"}


async def test_execution_errors(http: aiohttp.ClientSession, namespace: str) -> None:
    async with http.post("/api/v1/flows", data=flow_yaml(namespace), headers=YAML) as response:
        assert response.status == 201
    url = f"/api/v1/executions/{namespace}/hello"
    async with http.post(url, json={"count": "three", "extra": 1}) as response:
        assert response.status == 422
        errors = (await json_of(response))["errors"]
        assert {e["input"] for e in errors} == {"count", "extra"}
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    async with http.post(f"/api/v1/executions/{namespace}/missing", json={}) as response:
        assert response.status == 404
    async with http.get("/api/v1/executions/doesnotexist") as response:
        assert response.status == 404
    async with http.get("/api/v1/executions", params={"state": "NOPE"}) as response:
        assert response.status == 400


async def test_wait_answers_with_the_finished_execution(
    http: aiohttp.ClientSession,
    namespace: str,
    triggers: AIOKafkaConsumer,
    pool: asyncpg.Pool,
) -> None:
    async with http.post("/api/v1/flows", data=flow_yaml(namespace), headers=YAML) as response:
        assert response.status == 201
    url = f"/api/v1/executions/{namespace}/hello"

    async def start() -> tuple[int, Any]:
        async with http.post(url, json={"count": 1}, params={"wait": "true"}) as response:
            return response.status, await json_of(response)

    waiting = asyncio.create_task(start())
    # Play the executor and the indexer: take the trigger, write the finished execution.
    # The id is not known before the answer: this test's namespace is unique.
    trigger = await next_trigger(triggers, namespace=namespace)
    now = datetime.now(UTC)
    snapshot = ExecutionSnapshot(
        namespace=namespace,
        flow_id="hello",
        flow_revision=trigger.flow_revision,
        state=State.SUCCESS,
        histories=[StateChange(State.CREATED, now), StateChange(State.SUCCESS, now)],
        inputs=trigger.inputs,
    )
    async with pool.acquire() as conn:
        event = ExecutionEvent(trigger.execution_id, 1, now, execution=snapshot)
        await write_batch(conn, [event], [])
    status, body = await asyncio.wait_for(waiting, DEADLINE_S)
    assert status == 200
    assert body["id"] == trigger.execution_id and body["state"]["current"] == "SUCCESS"
    assert body["taskRunList"] == []

    async with http.get(f"/api/v1/executions/{trigger.execution_id}") as response:
        assert (await json_of(response))["inputs"] == {"count": 1, "name": "world"}
    async with http.get("/api/v1/executions", params={"namespace": namespace}) as response:
        page = await json_of(response)
        assert page["total"] == 1 and page["results"][0]["id"] == trigger.execution_id
    async with http.get(f"/api/v1/logs/{trigger.execution_id}") as response:
        assert await json_of(response) == []


async def test_wait_times_out_with_504(http: aiohttp.ClientSession, namespace: str) -> None:
    async with http.post("/api/v1/flows", data=flow_yaml(namespace), headers=YAML) as response:
        assert response.status == 201
    url = f"/api/v1/executions/{namespace}/hello"
    params = {"wait": "true", "timeout": "0.3"}
    async with http.post(url, json={"count": 1}, params=params) as response:
        assert response.status == 504
        body = await json_of(response)
        assert len(body["id"]) == ID_LENGTH and "did not end" in body["message"]


async def test_database_gone_gives_json_500_and_unhealthy(
    settings: Settings, database_url: str, auth_headers: dict[str, str]
) -> None:
    closed = await create_pool(database_url)
    await closed.close()
    executions = ExecutionRepository(closed)
    flow_log = FlowLog(settings, "test-unstarted")  # never started
    gateway = Gateway(
        pool=closed,
        producer=make_producer(settings, "test-unstarted"),  # never started
        flows=FlowStore(flow_log),
        executions=executions,
        logs=LogRepository(closed),
        waiter=ExecutionWaiter(database_url, executions),
        flow_log=flow_log,
    )
    app = make_app(
        gateway, Authenticator(load_credentials(settings)), HostPolicy.from_settings(settings)
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/v1/executions/some-id", headers=auth_headers)
        assert response.status == 500
        body = await json_of(response)
        assert body["message"] == f"internal error (request id {body['request_id']})"
        response = await client.get("/healthz")
        assert response.status == 503
        problems = (await json_of(response))["problems"]
        # The database, the producer, and a `flows` topic never read (flow_log unstarted).
        assert len(problems) == 3 and "flows topic was not read up to date" in problems[2]


async def messages_on_topic(settings: Settings, topic: str) -> list[Message]:
    """Every message on `topic` now: read from the start to the end offsets.

    The gateway answers only after the broker acked what it published, so once the
    answers are in, the end offsets taken here cover anything those requests published.
    """
    consumer = make_consumer(settings, topic, group_id=None, client_id="test-gateway-audit")
    await consumer.start()
    try:
        partitions = list(consumer.assignment())
        assert partitions, f"the {topic} topic has no partitions assigned"
        end = await consumer.end_offsets(partitions)
        found: list[Message] = []
        async with asyncio.timeout(DEADLINE_S):
            while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [codec.decode(record.value) for record in records]
        return found
    finally:
        await consumer.stop()


async def triggers_on_topic(settings: Settings, namespace: str) -> list[TriggerEvent]:
    """Every trigger of `namespace` on the topic now."""
    return [
        message
        for message in await messages_on_topic(settings, "triggers")
        if isinstance(message, TriggerEvent) and message.namespace == namespace
    ]


async def test_refused_starts_publish_no_trigger(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    async with http.post("/api/v1/flows", data=flow_yaml(namespace), headers=YAML) as response:
        assert response.status == 201
    disabled = flow_yaml(namespace, flow_id="off") + "disabled: true\n"
    async with http.post("/api/v1/flows", data=disabled, headers=YAML) as response:
        assert response.status == 201
    url = f"/api/v1/executions/{namespace}/hello"

    refused: list[tuple[str, dict[str, Any], int, str]] = [
        (url, {"count": "three"}, 422, "count"),
        (url, {"count": 1e20}, 422, "count"),  # beyond 64 bits: was a 500
        (url, {"count": 2**63}, 422, "count"),
        (url, {"count": 1, "name": "a\x00b"}, 422, "name"),
        (url, {"count": 1, "nobody": "x"}, 422, "nobody"),
        (f"/api/v1/executions/{namespace}/missing", {}, 404, "not found"),
        (f"/api/v1/executions/{namespace}/off", {"count": 1}, 409, "is disabled"),
    ]
    for target, inputs, status, says in refused:
        async with http.post(target, json=inputs) as response:
            assert response.status == status, (inputs, await response.text())
            body = await json_of(response)
            if status == 422:
                assert [e["input"] for e in body["errors"]] == [says]
            else:
                assert says in body["message"]
    async with http.post(url, json={"count": 1, "name": "a\x00b"}) as response:
        error = (await json_of(response))["errors"][0]
        assert "NUL character" in error["message"]

    # The one accepted start proves the reading below sees triggers at all.
    async with http.post(url, json={"count": 1}) as response:
        assert response.status == 202
        accepted = (await json_of(response))["id"]
    assert [t.execution_id for t in await triggers_on_topic(settings, namespace)] == [accepted]


async def test_a_resume_body_with_a_nul_is_400_and_sends_no_command(
    http: aiohttp.ClientSession, namespace: str, pool: asyncpg.Pool, settings: Settings
) -> None:
    # A PAUSED execution, written as the indexer would.
    execution_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    snapshot = ExecutionSnapshot(
        namespace=namespace,
        flow_id="hello",
        flow_revision=1,
        state=State.PAUSED,
        histories=[StateChange(State.RUNNING, now), StateChange(State.PAUSED, now)],
        inputs={},
    )
    async with pool.acquire() as conn:
        await write_batch(conn, [ExecutionEvent(execution_id, 1, now, execution=snapshot)], [])
    url = f"/api/v1/executions/{execution_id}/resume"

    # The body becomes the paused task's outputs: like start inputs, no NUL anywhere.
    for body in ({"approved": "a\x00b"}, {"deep": [{"key\x00": 1}]}):
        async with http.post(url, json=body) as response:
            assert response.status == 400, (body, await response.text())
            assert "NUL character" in (await json_of(response))["message"]
    async with http.post(url, data={"approved": "a\x00b"}) as response:  # a form, too
        assert response.status == 400, await response.text()

    async with http.post(url, json={"approved": "yes"}) as response:
        assert response.status == 202, await response.text()
    sent = [
        message
        for message in await messages_on_topic(settings, EXECUTION_COMMANDS.name)
        if isinstance(message, ExecutionCommand) and message.execution_id == execution_id
    ]
    assert [(c.kind, c.payload) for c in sent] == [
        (CommandKind.RESUME, {"inputs": {"approved": "yes"}})
    ]


async def test_nul_in_the_url_is_400_not_500(http: aiohttp.ClientSession, namespace: str) -> None:
    for path, params in (
        (f"/api/v1/flows/{namespace}/a%00b", {}),
        ("/api/v1/executions/x%00y", {}),
        ("/api/v1/logs/x%00y", {}),
        ("/api/v1/executions", {"namespace": "a\x00"}),
    ):
        async with http.get(path, params=params) as response:
            assert response.status == 400, (path, await response.text())
            assert "NUL" in (await json_of(response))["message"]


async def test_logs_of_an_unknown_execution_are_404(http: aiohttp.ClientSession) -> None:
    async with http.get(f"/api/v1/logs/{uuid.uuid4().hex}") as response:
        assert response.status == 404
        assert "not found" in (await json_of(response))["message"]


async def test_logs_are_paged(http: aiohttp.ClientSession, pool: asyncpg.Pool) -> None:
    execution_id = uuid.uuid4().hex
    base = datetime(2025, 1, 1, tzinfo=UTC)
    lines = [
        LogRecord(
            f"{execution_id}-{n}",
            execution_id,
            "test.logs",
            "f",
            base + timedelta(seconds=n),
            LogLevel.INFO,
            f"line {n}",
        )
        for n in range(5)
    ]
    async with pool.acquire() as conn:
        await write_batch(conn, [], lines)
    url = f"/api/v1/logs/{execution_id}"
    async with http.get(url) as response:
        assert [r["message"] for r in await json_of(response)] == [f"line {n}" for n in range(5)]
    async with http.get(url, params={"page": "2", "size": "2"}) as response:
        assert [r["message"] for r in await json_of(response)] == ["line 2", "line 3"]
    async with http.get(url, params={"page": "4", "size": "2"}) as response:
        assert await json_of(response) == []  # past the end of a known execution's lines
    for bad in ({"size": "10001"}, {"size": "0"}, {"page": "0"}, {"page": "x"}):
        async with http.get(url, params=bad) as response:
            assert response.status == 400, bad


async def test_flows_are_listed_a_page_at_a_time(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    for flow_id in ("c", "a", "b"):
        source = flow_yaml(namespace, flow_id=flow_id)
        async with http.post("/api/v1/flows", data=source, headers=YAML) as response:
            assert response.status == 201
    params = {"namespace": namespace}
    async with http.get("/api/v1/flows", params=params) as response:
        body = await json_of(response)
        assert [f["id"] for f in body["results"]] == ["a", "b", "c"] and body["total"] == 3
    async with http.get("/api/v1/flows", params={**params, "page": "2", "size": "2"}) as response:
        body = await json_of(response)
        assert [f["id"] for f in body["results"]] == ["c"] and body["total"] == 3
    async with http.get("/api/v1/flows", params={**params, "size": "100000"}) as response:
        assert response.status == 400


async def test_flow_files_listing_follows_the_pages(
    http: aiohttp.ClientSession, base_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for flow_id in ("a", "b", "c"):
        source = flow_yaml(namespace, flow_id=flow_id)
        async with http.post("/api/v1/flows", data=source, headers=YAML) as response:
            assert response.status == 201
    monkeypatch.setattr(flow_files, "LIST_PAGE_SIZE", 2)
    # The client is synchronous: off the loop that serves the gateway.
    listed = await asyncio.to_thread(flow_files.list_flows, ApiClient(base_url), namespace)
    assert [f["id"] for f in listed] == ["a", "b", "c"]
