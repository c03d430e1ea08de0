"""The gateway's error middleware on a real aiohttp server: a crash answers a JSON 500
with a request id, and the log line never carries a webhook key."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from headrace.services.gateway.responses import error_middleware

KEY = "s3cret-key-0123456789"


async def crash(request: web.Request) -> web.Response:
    raise RuntimeError("database went away")


async def test_a_crash_answers_500_and_logs_no_webhook_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = web.Application(middlewares=[error_middleware])
    app.router.add_post("/api/v1/executions/webhook/{namespace}/{flowId}/{key}", crash)
    app.router.add_get("/api/v1/flows/{namespace}", crash)
    async with TestClient(TestServer(app)) as client:
        with caplog.at_level(logging.ERROR):
            hooked = await client.post(f"/api/v1/executions/webhook/ns/flow/{KEY}")
            listed = await client.get("/api/v1/flows/team.data")
        assert hooked.status == listed.status == 500
        assert "request id" in (await hooked.json())["message"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/api/v1/executions/webhook/ns/flow/***" in logged
    assert "/api/v1/flows/team.data" in logged  # other paths are logged as they are
    assert KEY not in caplog.text
