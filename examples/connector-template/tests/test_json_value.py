"""json.value against a local HTTP server: the test kit runs it as a worker would, in
this process (`run_task`, fast) or on a real worker and broker (`TestWorker`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from headrace_json_value import JsonValue

from headrace.states import State
from headrace.testing import TestWorker, run_task, secret

TOKEN = "a-secret-token"


@pytest.fixture
async def api() -> AsyncIterator[TestServer]:
    async def stats(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "bad token"}, status=401)
        return web.json_response({"data": {"count": 3}})

    app = web.Application()
    app.router.add_get("/stats", stats)
    async with TestServer(app) as server:
        yield server


async def test_reads_the_value_at_path(api: TestServer) -> None:
    properties = {"url": str(api.make_url("/stats")), "path": "data.count", "token": TOKEN}
    run = await run_task(JsonValue, properties, secrets={"API_TOKEN": TOKEN})
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"value": 3}
    assert run.messages == [f"GET {properties['url']}"]


async def test_fails_with_the_servers_answer(api: TestServer) -> None:
    run = await run_task(JsonValue, {"url": str(api.make_url("/stats")), "token": "wrong"})
    assert run.state is State.FAILED
    assert "answered 401" in run.error and "bad token" in run.error


async def test_names_a_missing_key(api: TestServer) -> None:
    properties = {"url": str(api.make_url("/stats")), "path": "data.total", "token": TOKEN}
    run = await run_task(JsonValue, properties)
    assert run.state is State.FAILED and run.error == "no key 'total' on the way to 'data.total'"


async def test_a_wrong_property_type_is_refused_by_name() -> None:
    run = await run_task(JsonValue, {"url": ["not", "text"]})
    assert run.state is State.FAILED and "invalid property 'url'" in run.error


async def test_a_real_worker_finds_and_runs_it(api: TestServer) -> None:
    # The installed entry point, as every worker finds it; the token as a flow passes it.
    url = str(api.make_url("/stats"))
    properties = {"url": url, "path": "data.count", "token": secret("API_TOKEN")}
    async with TestWorker(secrets={"API_TOKEN": TOKEN}) as worker:
        run = await worker.run_task("json.value", properties, timeout=timedelta(seconds=30))
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"value": 3}
    assert run.messages == [f"GET {url}"]
