"""`/api/v1/logs/{executionId}`: an execution's log lines, oldest first."""

from __future__ import annotations

from aiohttp import web

from headrace.messages import LogLevel
from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import ApiError, json_response


async def list_logs(request: web.Request) -> web.Response:
    min_level = None
    raw = request.query.get("minLevel")
    if raw:
        try:
            min_level = LogLevel(raw.upper())
        except ValueError as exc:
            choices = ", ".join(LogLevel)
            raise ApiError(400, f"unknown minLevel {raw!r} (one of {choices})") from exc
    gw = gateway(request)
    execution_id = request.match_info["executionId"]
    records = await gw.logs.list(execution_id, min_level)
    # No lines and no execution: a mistyped id, not a quiet execution. (Lines may be
    # indexed before their execution: then they are shown.)
    if not records and await gw.executions.state(execution_id) is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return json_response(records)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/logs/{executionId}", list_logs)
