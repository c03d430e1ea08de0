"""`/api/v1/logs/{executionId}`: an execution's log lines, oldest first, a page at a time,
or whole as text (`/download`). Live lines: services/gateway/follow.py.

Filters (Kestra's names): `minLevel`, `taskId`, `taskRunId`, `attempt`, and a time range
`startDate` (lines at or after) / `endDate` (lines before), ISO 8601. The answer is a
JSON list (what the CLI reads); `page` and `size` pick the slice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from headrace.db.logs import LogFilter
from headrace.messages import LogLevel
from headrace.services.gateway.bodies import query_int, query_page
from headrace.services.gateway.context import gateway
from headrace.services.gateway.files_api import content_disposition
from headrace.services.gateway.responses import ApiError, json_response

# Lines per answer: the default shows a typical execution whole; the maximum bounds
# the memory one request can take (a chatty task writes many thousands).
DEFAULT_LOG_PAGE_SIZE = 1_000
MAX_LOG_PAGE_SIZE = 10_000
# A download reads this many lines per query: memory stays bounded, whatever the size.
DOWNLOAD_BATCH = 5_000


def log_filter(request: web.Request) -> LogFilter:
    """The filters of the query string; 400 naming a bad one."""
    min_level = None
    raw = request.query.get("minLevel")
    if raw:
        try:
            min_level = LogLevel(raw.upper())
        except ValueError as exc:
            choices = ", ".join(LogLevel)
            raise ApiError(400, f"unknown minLevel {raw!r} (one of {choices})") from exc
    attempt = query_int(request, "attempt", 0, 1, 1_000_000) if "attempt" in request.query else None
    return LogFilter(
        min_level=min_level,
        task_id=request.query.get("taskId") or None,
        task_run_id=request.query.get("taskRunId") or None,
        attempt=attempt,
        since=_date(request, "startDate"),
        until=_date(request, "endDate"),
    )


def _date(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(
            400, f"query parameter {name!r} is not an ISO 8601 date and time: {raw!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _check_known(request: web.Request, execution_id: str) -> None:
    # No execution and no line at all: a mistyped id, not a quiet execution or a page
    # past the end. (Lines may be indexed before their execution: then they are shown.)
    gw = gateway(request)
    if await gw.executions.state(execution_id) is None and not await gw.logs.exists(execution_id):
        raise ApiError(404, f"execution {execution_id} not found")


async def list_logs(request: web.Request) -> web.Response:
    filter = log_filter(request)
    page, size = query_page(request, DEFAULT_LOG_PAGE_SIZE, MAX_LOG_PAGE_SIZE)
    execution_id = request.match_info["executionId"]
    records = await gateway(request).logs.list(
        execution_id, limit=size, offset=(page - 1) * size, filter=filter
    )
    if not records:
        await _check_known(request, execution_id)
    return json_response(records)


def format_line(record: dict) -> str:
    """One line of a downloaded log: time, level, task (attempt), message."""
    task = record["taskId"] or "-"
    if record["attempt"] is not None:
        task += f"#{record['attempt']}"
    time = record["timestamp"].isoformat(timespec="milliseconds")
    return f"{time} {record['level']:<5} {task} {record['message']}\n"


async def download_logs(request: web.Request) -> web.StreamResponse:
    """Every matching line as text, streamed a slice at a time."""
    filter = log_filter(request)
    execution_id = request.match_info["executionId"]
    await _check_known(request, execution_id)
    logs = gateway(request).logs
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Disposition": content_disposition(f"{execution_id}.log"),
        }
    )
    await response.prepare(request)
    after, more = 0, True
    while more:
        lines, after, more = await logs.after(execution_id, after, DOWNLOAD_BATCH, filter)
        if lines:
            await response.write("".join(format_line(line) for _, line in lines).encode())
    await response.write_eof()
    return response


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/logs/{executionId}", list_logs)
    app.router.add_get(prefix + "/logs/{executionId}/download", download_logs)
