"""`/api/v1/logs/{executionId}`: an execution's log lines, oldest first, a page at a time.

The answer is a JSON list (what the CLI reads); `page` and `size` pick the slice.
"""

from __future__ import annotations

from aiohttp import web

from headrace.messages import LogLevel
from headrace.services.gateway.bodies import query_page
from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import ApiError, json_response

# Lines per answer: the default shows a typical execution whole; the maximum bounds
# the memory one request can take (a chatty task writes many thousands).
DEFAULT_LOG_PAGE_SIZE = 1_000
MAX_LOG_PAGE_SIZE = 10_000


async def list_logs(request: web.Request) -> web.Response:
    min_level = None
    raw = request.query.get("minLevel")
    if raw:
        try:
            min_level = LogLevel(raw.upper())
        except ValueError as exc:
            choices = ", ".join(LogLevel)
            raise ApiError(400, f"unknown minLevel {raw!r} (one of {choices})") from exc
    page, size = query_page(request, DEFAULT_LOG_PAGE_SIZE, MAX_LOG_PAGE_SIZE)
    gw = gateway(request)
    execution_id = request.match_info["executionId"]
    records = await gw.logs.list(execution_id, min_level, limit=size, offset=(page - 1) * size)
    # No execution and no line at all: a mistyped id, not a quiet execution or a page
    # past the end. (Lines may be indexed before their execution: then they are shown.)
    if (
        not records
        and await gw.executions.state(execution_id) is None
        and not await gw.logs.exists(execution_id)
    ):
        raise ApiError(404, f"execution {execution_id} not found")
    return json_response(records)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/logs/{executionId}", list_logs)
