"""JSON in and out of the gateway, and the one error type handlers raise.

Every error leaves as `{"message": …, "errors"?: […]}` with its status: handlers raise
`ApiError`, the middleware turns aiohttp's own HTTP errors (404 route, 405, 413) into
the same shape, and any other exception into a 500 carrying a request id that is also
logged with the traceback. Never an HTML page, never a traceback to the client.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from headrace.errors import HeadraceError

log = logging.getLogger(__name__)

# Dates as Kestra writes them (RFC 3339 with `Z`); dict keys may be non-strings in outputs.
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class ApiError(HeadraceError):
    """An answer other than success, raised by a handler."""

    def __init__(self, status: int, message: str, errors: list[Any] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.extra = extra


def json_bytes(body: Any) -> bytes:
    """`body` as the API writes JSON everywhere (dates with `Z`)."""
    return orjson.dumps(body, option=_JSON_OPTIONS)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json_bytes(body),
        status=status,
        content_type="application/json",
    )


def error_response(
    status: int, message: str, errors: list[Any] | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {"message": message, **extra}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def loggable_path(request: web.Request) -> str:
    """The path without secrets: a webhook URL's last segment is its key."""
    if request.match_info.get("key"):
        return request.path.rsplit("/", 1)[0] + "/***"
    return request.path


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.errors, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are answers, not errors
        return error_response(exc.status, exc.text or exc.reason)
    except Exception:
        request_id = uuid.uuid4().hex[:16]
        log.exception(
            "request %s %s failed (request id %s)",
            request.method,
            loggable_path(request),
            request_id,
        )
        return error_response(
            500, f"internal error (request id {request_id})", request_id=request_id
        )
