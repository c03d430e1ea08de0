"""Kestra's REST paths, next to headrace's own, answering in Kestra's shapes.

Kestra's clients (its Python SDK `kestrapy`, scripts written for Kestra) call:

- under `/api/v1` and under the tenant prefix `/api/v1/{tenant}` (only `main` exists):
  `GET .../executions/search`, `GET .../flows/search`, `GET .../flows/{namespace}` (a
  namespace's flows), `DELETE .../executions/{id}/kill` (Kestra 1.x, 202) and
  `DELETE .../executions/{id}/actions/kill` (Kestra 2.x and kestrapy 2, 200);
- under the tenant prefix only, the paths whose `/api/v1` spelling is headrace's own
  route with headrace's answer (kept as it is): `POST .../flows` (YAML),
  `GET|PUT|DELETE .../flows/{namespace}/{id}`, `POST .../executions/{namespace}/{flowId}`
  (inputs as multipart or JSON, `wait`), `GET .../executions/{id}` and
  `GET .../executions`.

The flow and execution routes run headrace's handlers (`flows_api`, `executions_api`:
the same validation, roles, errors and limits) and reshape their answers
(`kestra_shapes`); the searches read Kestra's filters (`kestra_filters`). Another
tenant than `main` is a 404 that says which one exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from headrace.db.executions import EXECUTION_COLUMNS, MAX_PAGE_SIZE, execution_json
from headrace.messages import CommandKind, FlowRevision
from headrace.services.gateway import executions_api, flows_api
from headrace.services.gateway.auth import can_write
from headrace.services.gateway.bodies import query_bool, query_page
from headrace.services.gateway.context import gateway
from headrace.services.gateway.kestra_filters import (
    EXECUTION_FIELDS,
    FLOW_FIELDS,
    Condition,
    execution_order,
    execution_where,
    flow_matches,
    read_conditions,
)
from headrace.services.gateway.kestra_shapes import (
    TENANT,
    kestra_execution,
    kestra_flow,
    paged,
)
from headrace.services.gateway.responses import ApiError, json_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Kestra's default page size for its searches (`@QueryValue(defaultValue = "10")`).
DEFAULT_SEARCH_SIZE = 10
TENANT_SEGMENT = "/{tenant}"
# Kestra's sort keys for flows, and what orders them.
_FLOW_SORTS = {"id": "flow_id", "namespace": "namespace"}


def _now() -> datetime:
    return datetime.now(UTC)


def tenant_checked(handler: Handler) -> Handler:
    """The handler, after a 404 for any tenant but `main` (headrace has that one)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        tenant = request.match_info.get("tenant")
        if tenant is not None and tenant != TENANT:
            raise ApiError(
                404,
                f"tenant {tenant[:100]!r} not found: headrace has one tenant, {TENANT!r} "
                f"(/api/v1/{TENANT}/…), whose routes also answer under /api/v1/…",
            )
        return await handler(request)

    return checked


def _json_of(response: web.StreamResponse) -> Any:
    """The JSON body of an answer a headrace handler made (`json_response`)."""
    assert isinstance(response, web.Response) and response.body is not None
    return orjson.loads(bytes(response.body))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- executions


async def search_executions(request: web.Request) -> web.Response:
    """Kestra's `GET /executions/search` (and `GET /executions` under a tenant): a page
    of executions, without their task runs, as `{results, total}`."""
    conditions = read_conditions(request.query, EXECUTION_FIELDS)
    order = execution_order(request.query.getall("sort", []))
    page, size = query_page(request, DEFAULT_SEARCH_SIZE, MAX_PAGE_SIZE)
    now = _now()
    where, args = execution_where(conditions, now)
    pool = gateway(request).pool
    async with pool.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM executions WHERE {where}", *args)
        rows = await conn.fetch(
            f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {where} ORDER BY {order}"
            f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}",
            *args,
            size,
            (page - 1) * size,
        )
    return json_response(
        paged([kestra_execution(execution_json(r, None), now) for r in rows], total)
    )


async def get_execution(request: web.Request) -> web.Response:
    execution_id = request.match_info["id"]
    execution = await gateway(request).executions.get(execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return json_response(kestra_execution(execution, _now()))


async def start_execution(request: web.Request) -> web.Response:
    """Kestra's start: 200 with the execution, created (or ended, with `wait=true`)."""
    answer = await executions_api.start_execution(request)
    body, now = _json_of(answer), _now()
    if answer.status == 202:  # not waited for: as Kestra says it, CREATED just now
        current = body["state"]["current"]
        body["state"] = {"current": current, "histories": [{"state": current, "date": now}]}
        body["createdAt"] = now
    return json_response(kestra_execution(body, now))


def _kill(status: int) -> Handler:
    async def kill(request: web.Request) -> web.Response:
        """Send the kill (as `POST /executions/{id}/kill` does) and answer the execution
        as the index has it; its own answer when the index has none yet."""
        if not _query_bool_default_true(request, "isOnKillCascade"):
            raise ApiError(
                400,
                "isOnKillCascade=false is not supported: a kill in headrace always kills "
                "the execution's subflows too",
            )
        answer = await executions_api.send_command(request, CommandKind.KILL)
        execution = await gateway(request).executions.get(request.match_info["id"])
        body = _json_of(answer) if execution is None else kestra_execution(execution, _now())
        return json_response(body, status=status)

    return kill


async def resume(request: web.Request) -> web.Response:
    """Resume with the inputs of a form (kestrapy sends multipart), as
    `POST /executions/{id}/resume` does, and answer the execution as the index has it."""
    answer = await executions_api.resume_execution(request)  # raises if refused
    execution = await gateway(request).executions.get(request.match_info["id"])
    body = _json_of(answer) if execution is None else kestra_execution(execution, _now())
    return json_response(body)


def _query_bool_default_true(request: web.Request, name: str) -> bool:
    return True if name not in request.query else query_bool(request, name)


# --------------------------------------------------------------------------- flows


async def _flow_body(request: web.Request, record: FlowRevision) -> dict[str, Any]:
    return await flows_api.flow_json(request, record, masked=not can_write(request))


def _flow_sort(request: web.Request) -> tuple[Callable[[FlowRevision], tuple[str, ...]], bool]:
    """How Kestra's `sort` (`id:asc`, `namespace:desc`) orders flows: the key and whether
    descending; by namespace and id when none is given."""
    sorts = [s for item in request.query.getall("sort", []) for s in item.split(",") if s]
    if len(sorts) > 1:
        raise ApiError(400, "flows sort by one key (id or namespace)")
    field, _, direction = (sorts or ["namespace:asc"])[0].partition(":")
    if field not in _FLOW_SORTS or direction.lower() not in ("", "asc", "desc"):
        raise ApiError(400, f"cannot sort flows by {sorts[0]!r}: id or namespace, :asc or :desc")
    attribute = _FLOW_SORTS[field]

    def key(record: FlowRevision) -> tuple[str, ...]:
        return (getattr(record, attribute), record.namespace, record.flow_id)

    return key, direction.lower() == "desc"


async def search_flows(request: web.Request) -> web.Response:
    """Kestra's `GET /flows/search`: latest revisions, as `{results, total}`."""
    conditions = read_conditions(request.query, FLOW_FIELDS)
    page, size = query_page(request, DEFAULT_SEARCH_SIZE, flows_api.MAX_FLOW_PAGE_SIZE)
    sort_key, descending = _flow_sort(request)
    by_name = [c for c in conditions if c.field != "labels"]
    by_label = [c for c in conditions if c.field == "labels"]
    records = [
        r
        for r in gateway(request).flows.list()
        if flow_matches({"id": r.flow_id, "namespace": r.namespace}, by_name)
    ]
    records.sort(key=sort_key, reverse=descending)
    bodies, total = await _page_of_flows(request, records, by_label, page, size)
    return json_response(paged([kestra_flow(b, with_source=False) for b in bodies], total))


async def _page_of_flows(
    request: web.Request,
    records: list[FlowRevision],
    by_label: list[Condition],
    page: int,
    size: int,
) -> tuple[list[dict[str, Any]], int]:
    """The page's flow bodies and the total; labels are known once a flow is parsed, so
    a label filter parses every candidate, and otherwise only the page's."""
    window = slice((page - 1) * size, page * size)
    if not by_label:
        return [await _flow_body(request, r) for r in records[window]], len(records)
    bodies = [await _flow_body(request, r) for r in records]
    matching = [b for b in bodies if flow_matches(b, by_label)]
    return matching[window], len(matching)


async def list_namespace_flows(request: web.Request) -> web.Response:
    """Kestra's `GET /flows/{namespace}`: that namespace's flows (not those below it)."""
    namespace = request.match_info["namespace"]
    records = [r for r in gateway(request).flows.list(namespace) if r.namespace == namespace]
    return json_response(
        [kestra_flow(await _flow_body(request, r), with_source=False) for r in records]
    )


def _reshaped_flow(handler: Handler) -> Handler:
    """A headrace flow handler whose answer becomes Kestra's `FlowWithSource`, 200."""

    async def reshaped(request: web.Request) -> web.Response:
        body = _json_of(await handler(request))
        return json_response(kestra_flow(body, with_source=True))

    return reshaped


async def get_flow(request: web.Request) -> web.Response:
    """Kestra's `GET /flows/{namespace}/{id}`: the source only with `source=true`."""
    body = _json_of(await flows_api.get_flow(request))
    return json_response(kestra_flow(body, with_source=query_bool(request, "source")))


# --------------------------------------------------------------------------- routes


def add_routes(app: web.Application, prefix: str) -> None:
    """The Kestra paths headrace has no spelling of, under `prefix` (`/api/v1`): after
    `flows_api` (its `/flows/schema` is no namespace), before `executions_api` (whose
    `/executions/{id}` would take `search` for an id)."""
    _add_shared(app, prefix)


def add_tenant_routes(app: web.Application, prefix: str) -> None:
    """Everything under `prefix/{tenant}`: last, so that no headrace route is shadowed
    (none has a variable third segment, so `/api/v1/main/…` is never one of them)."""
    tenant = prefix + TENANT_SEGMENT
    _add_shared(app, tenant)
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/flows", _reshaped_flow(flows_api.create_flow)),
        ("GET", "/flows/{namespace}/{id}", get_flow),
        ("PUT", "/flows/{namespace}/{id}", _reshaped_flow(flows_api.put_flow)),
        ("DELETE", "/flows/{namespace}/{id}", flows_api.delete_flow),
        # Before the start's `/executions/{namespace}/{flowId}`, which would take it
        # (a flow `resume` in a namespace named like the id): routes match in order.
        ("POST", "/executions/{id}/resume", resume),
        ("POST", "/executions/{namespace}/{flowId}", start_execution),
        ("GET", "/executions/{id}", get_execution),
        ("GET", "/executions", search_executions),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, tenant + path, tenant_checked(handler))


def _add_shared(app: web.Application, base: str) -> None:
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/executions/search", search_executions),
        ("DELETE", "/executions/{id}/kill", _kill(202)),
        ("DELETE", "/executions/{id}/actions/kill", _kill(200)),
        ("POST", "/executions/{id}/actions/resume", resume),
        ("GET", "/flows/search", search_flows),
        ("GET", "/flows/{namespace}", list_namespace_flows),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, base + path, tenant_checked(handler))
