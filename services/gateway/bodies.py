"""Reading request bodies and query parameters, with the right 4xx when they are wrong."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import isodate
import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from multidict import MultiDictProxy

from headrace.services.gateway.responses import ApiError

NUL = "\x00"


@web.middleware
async def refuse_nul_in_url(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """400 for a NUL (`%00`) anywhere in the path or query: PostgreSQL cannot compare
    text holding one, so it would otherwise surface as a 500 from the first query."""
    if NUL in request.path or any(NUL in k or NUL in v for k, v in request.query.items()):
        raise ApiError(400, "the URL contains a NUL character (%00)")
    return await handler(request)


YAML_TYPES = frozenset({"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml"})
FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


async def read_yaml(request: web.Request) -> str:
    if request.content_type not in YAML_TYPES:
        raise ApiError(
            415, f"expected a YAML body (application/x-yaml), got {request.content_type}"
        )
    data = await request.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8: {exc}") from exc


async def read_inputs(request: web.Request) -> dict[str, Any]:
    """Execution inputs from a JSON object, a form (multipart or urlencoded), or no body."""
    if not request.body_exists:
        return {}
    if request.content_type == "application/json":
        data = await request.read()
        if not data.strip():
            return {}
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"malformed JSON body: {exc}") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "the inputs must be a JSON object")
        return value
    if request.content_type in FORM_TYPES:
        return _form_values(await read_form(request))
    raise ApiError(
        415,
        "inputs must be application/json, multipart/form-data or "
        f"application/x-www-form-urlencoded, got {request.content_type}",
    )


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The form fields; a body that is no form of its declared type is a 400."""
    try:
        return await request.post()
    # No boundary, bad encoding, unknown charset; a part's header aiohttp cannot parse
    # (BadHttpMessage: a raw byte that is no header text, in a field's name).
    except (ValueError, LookupError, BadHttpMessage) as exc:
        raise ApiError(400, f"malformed {request.content_type} body: {exc}") from exc


def _form_values(form: MultiDictProxy[Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            try:
                value = value.file.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(400, f"file input {key!r} is not UTF-8 text") from exc
        values[key] = value
    return values


def query_int(request: web.Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, f"query parameter {name!r} must be an integer, got {raw!r}") from exc
    if not minimum <= value <= maximum:
        raise ApiError(400, f"query parameter {name!r} must be within {minimum}..{maximum}")
    return value


# Far beyond any real listing; bounds OFFSET so a typo cannot ask for a huge scan.
MAX_PAGE = 1_000_000


def query_page(request: web.Request, default_size: int, max_size: int) -> tuple[int, int]:
    """`page` (from 1) and `size` query parameters, checked against their bounds."""
    page = query_int(request, "page", 1, 1, MAX_PAGE)
    size = query_int(request, "size", default_size, 1, max_size)
    return page, size


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "").lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ApiError(400, f"query parameter {name!r} must be true or false, got {raw!r}")


def query_seconds(request: web.Request, name: str, default: float, maximum: float) -> float:
    """A duration in seconds (`300`, `2.5`) or ISO 8601 (`PT5M`), within (0, maximum]."""
    raw = request.query.get(name)
    if not raw:
        return default
    try:
        seconds = isodate.parse_duration(raw).total_seconds() if raw[:1] in "Pp" else float(raw)
    except (ValueError, OverflowError, isodate.ISO8601Error) as exc:
        raise ApiError(
            400, f"query parameter {name!r} is not a duration (seconds, or ISO 8601): {raw!r}"
        ) from exc
    # NaN compares false with everything: it would slip past both bounds below.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ApiError(400, f"query parameter {name!r} must be a positive number, got {raw!r}")
    if seconds > maximum:
        raise ApiError(
            400, f"query parameter {name!r} must be at most {maximum:g} seconds, got {raw!r}"
        )
    return seconds


def query_labels(request: web.Request) -> dict[str, str]:
    """Labels as Kestra's API takes them: repeated `labels=key:value`."""
    labels: dict[str, str] = {}
    for item in request.query.getall("labels", []):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ApiError(400, f"label {item!r} is not key:value")
        labels[key] = value
    return labels


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (none: a 400 saying so, as for any other value)."""
    try:
        body = orjson.loads(await request.read() or b"null")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
