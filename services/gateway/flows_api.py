"""`/api/v1/flows`: store, read, list, delete and validate flows (YAML bodies), apply many
at once (`flows_bulk.py`), list and diff a flow's revisions, and the JSON Schema of flows
for editors."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow_with_warnings
from headrace.flow.model import Flow
from headrace.flow_diff import unified_diff
from headrace.flow_schema import MEDIA_TYPE, flow_json_schema_bytes
from headrace.flow_store import FlowExistsError, FlowsUnavailable
from headrace.messages import FlowRevision
from headrace.services.gateway.auth import can_write
from headrace.services.gateway.bodies import query_int, query_page, read_yaml
from headrace.services.gateway.context import gateway
from headrace.services.gateway.flow_loading import LOAD_TIMEOUT_S
from headrace.services.gateway.flows_bulk import bulk_flows
from headrace.services.gateway.masking import mask_flow_json, mask_source
from headrace.services.gateway.responses import ApiError, json_response

MAX_REVISION = 2**31 - 1
# Flows per listing page. Each carries its source, so the maximum stays modest; the
# default is the maximum so that a client reading one page sees every flow of a
# typical installation (clients should still follow `total`).
MAX_FLOW_PAGE_SIZE = 1_000
DEFAULT_FLOW_PAGE_SIZE = MAX_FLOW_PAGE_SIZE


async def _parse(request: web.Request, source: str, name: str = "<request body>") -> Flow:
    try:
        return await gateway(request).flow_loader.load(source, name)
    except FlowValidationError as exc:
        raise ApiError(422, "invalid flow", exc.to_json()) from exc


async def flow_json(
    request: web.Request, record: FlowRevision, flow: Flow | None = None, *, masked: bool = False
) -> dict[str, Any]:
    """The stored revision, with the parsed definition's fields when it still loads;
    `masked`: webhook keys hidden, for a reader."""
    body: dict[str, Any] = {}
    if flow is None:
        name = f"{record.namespace}/{record.flow_id}@{record.revision}"
        try:
            flow = await gateway(request).flow_loader.load(record.source, name)
        except FlowValidationError:
            flow = None  # stored under older rules: the source is still served
    if flow is not None:
        body.update(flow.model_dump(mode="json", by_alias=True, exclude_none=True))
    body.update(
        namespace=record.namespace,
        id=record.flow_id,
        revision=record.revision,
        source=record.source,
        createdAt=record.created_at,
    )
    return mask_flow_json(body, flow) if masked else body


async def create_flow(request: web.Request) -> web.Response:
    return await create_from_source(request, await read_yaml(request))


async def create_from_source(request: web.Request, source: str) -> web.Response:
    """Store a new flow from its YAML: 201 with its first revision, 422 when invalid,
    409 when it exists (also a blueprint's copy: blueprints_api)."""
    gw = gateway(request)
    flow = await _parse(request, source)
    try:
        revision = await gw.flows.create(flow.namespace, flow.id, source)
    except FlowExistsError as exc:
        raise ApiError(409, f"flow {flow.namespace}/{flow.id} already exists") from exc
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    record = gw.flows.get(flow.namespace, flow.id, revision)
    assert record is not None  # a revision a change decided is never removed
    return json_response(await flow_json(request, record, flow), status=201)


async def put_flow(request: web.Request) -> web.Response:
    """Create or update; 201 when a new revision was written, 200 when unchanged."""
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["id"]
    source = await read_yaml(request)
    flow = await _parse(request, source)
    mismatches = [
        {"path": key, "line": None, "column": None, "message": msg, "hint": None}
        for key, ok, msg in (
            ("namespace", flow.namespace == namespace, f"must be {namespace!r} (the URL's)"),
            ("id", flow.id == flow_id, f"must be {flow_id!r} (the URL's)"),
        )
        if not ok
    ]
    if mismatches:
        raise ApiError(422, "the flow's namespace and id must match the URL", mismatches)
    try:
        revision, created = await gw.flows.save(namespace, flow_id, source)
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    record = gw.flows.get(namespace, flow_id, revision)
    assert record is not None
    return json_response(await flow_json(request, record, flow), status=201 if created else 200)


async def get_flow(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["id"]
    revision = None
    if request.query.get("revision"):
        revision = query_int(request, "revision", 0, 1, MAX_REVISION)
    try:
        record = await gw.flows.find(namespace, flow_id, revision)
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    if record is None:
        raise ApiError(
            404, _missing(gw.flows.history(namespace, flow_id), namespace, flow_id, revision)
        )
    return json_response(await flow_json(request, record, masked=not can_write(request)))


def _missing(
    history: list[FlowRevision], namespace: str, flow_id: str, revision: int | None
) -> str:
    """Why a flow, or one revision of it, has no source to serve."""
    what = f"flow {namespace}/{flow_id}" + (f" revision {revision}" if revision else "")
    if not history:
        return f"{what} not found"
    if revision is None:
        return (
            f"{what} not found: it was deleted at revision {history[-1].revision}"
            f" (GET /api/v1/flows/{namespace}/{flow_id}/revisions lists them all)"
        )
    if any(r.revision == revision and r.deleted for r in history):
        return f"{what} not found: that revision is the flow's deletion"
    return f"{what} not found: its latest revision is {history[-1].revision}"


async def _history(request: web.Request) -> list[FlowRevision]:
    """The revisions of the URL's flow, looking once more when none was read (saved a
    moment ago through another gateway); 404 for a flow never stored."""
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["id"]
    history = gw.flows.history(namespace, flow_id)
    if not history:
        try:
            await gw.flows.find(namespace, flow_id)  # reads the topic up to date once
        except FlowsUnavailable as exc:
            raise ApiError(503, str(exc)) from exc
        history = gw.flows.history(namespace, flow_id)
    if not history:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    return history


async def flow_revisions(request: web.Request) -> web.Response:
    """Every revision of a flow, oldest first: number, date, and whether it is the
    flow's deletion (sources: `GET .../{id}?revision=N`)."""
    return json_response(
        [
            {
                "namespace": r.namespace,
                "id": r.flow_id,
                "revision": r.revision,
                "createdAt": r.created_at,
                "deleted": r.deleted,
            }
            for r in await _history(request)
        ]
    )


async def flow_diff(request: web.Request) -> web.Response:
    """The unified diff of the flow's source from revision `from` to revision `to`; a
    deletion's source is empty (everything removed), and webhook keys are masked for a
    reader."""
    history = {r.revision: r for r in await _history(request)}
    numbers = [query_int(request, name, 0, 1, MAX_REVISION) for name in ("from", "to")]
    for name, number in zip(("from", "to"), numbers, strict=True):
        if number == 0:
            raise ApiError(400, f"query parameter {name!r} is required: a revision number")
    namespace, flow_id = request.match_info["namespace"], request.match_info["id"]
    unknown = [n for n in numbers if n not in history]
    if unknown:
        raise ApiError(
            404,
            f"flow {namespace}/{flow_id} has no revision {unknown[0]}"
            f" (its revisions: 1 to {max(history)})",
        )
    masked = not can_write(request)
    texts = []
    for number in numbers:
        record = history[number]
        if record.deleted:
            texts.append(("", f"{namespace}/{flow_id} revision {number} (deleted)"))
        else:
            source = mask_source(record.source, None) if masked else record.source
            texts.append((source, f"{namespace}/{flow_id} revision {number}"))
    (old, old_name), (new, new_name) = texts
    return json_response(
        {
            "namespace": namespace,
            "id": flow_id,
            "from": numbers[0],
            "to": numbers[1],
            "diff": unified_diff(old, new, old_name, new_name),
        }
    )


async def list_flows(request: web.Request) -> web.Response:
    gw = gateway(request)
    page, size = query_page(request, DEFAULT_FLOW_PAGE_SIZE, MAX_FLOW_PAGE_SIZE)
    records, total = gw.flows.page(request.query.get("namespace") or None, page, size)
    masked = not can_write(request)
    results = [
        {
            "namespace": r.namespace,
            "id": r.flow_id,
            "revision": r.revision,
            "source": mask_source(r.source, None) if masked else r.source,
            "createdAt": r.created_at,
        }
        for r in records
    ]
    return json_response({"results": results, "total": total, "page": page, "size": size})


async def delete_flow(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace, flow_id = request.match_info["namespace"], request.match_info["id"]
    try:
        deleted = await gw.flows.delete(namespace, flow_id)
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    if not deleted:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    return web.Response(status=204)


async def validate_flow(request: web.Request) -> web.Response:
    """`valid` and `errors` (each with path, line, column, message, hint), and the
    `warnings` of a valid flow: what it asks for that headrace accepts but does
    differently (`load_flow_with_warnings`), each with its place."""
    source = await read_yaml(request)
    loader = gateway(request).flow_loader
    try:
        flow = await loader.load(source, "<request body>")
    except FlowValidationError as exc:
        return json_response({"valid": False, "errors": exc.to_json(), "warnings": []})
    try:
        warnings = await loader.run(flow_warnings, source, timeout_s=LOAD_TIMEOUT_S)
    except ApiError:  # it loaded within the limit: its warnings are only slower to list
        warnings = []
    return json_response(
        {
            "valid": True,
            "errors": [],
            "warnings": warnings,
            "namespace": flow.namespace,
            "id": flow.id,
        }
    )


def flow_warnings(source: str) -> list[dict[str, Any]]:
    """In a flow loader's worker: the warnings of a flow that loads."""
    _, warnings = load_flow_with_warnings(source, "<request body>")
    return [asdict(w) for w in warnings]  # path, line, column, message, hint


async def flow_schema(request: web.Request) -> web.Response:
    """The JSON Schema of flows for the task types installed here (docs/editors.md).

    Served as `application/schema+json`, the media type JSON Schema registers: it says
    what the document is, and its `+json` suffix lets any JSON reader take it. Built
    once per process: it only changes when connectors are installed or removed.
    """
    return web.Response(body=flow_json_schema_bytes(), content_type=MEDIA_TYPE)


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_post(f"{prefix}/flows", create_flow)
    app.router.add_post(f"{prefix}/flows/validate", validate_flow)
    app.router.add_post(f"{prefix}/flows/bulk", bulk_flows)
    # Before any `/flows/{namespace}` route, which would otherwise take `schema` for a
    # namespace (routes match in the order they are added).
    app.router.add_get(f"{prefix}/flows/schema", flow_schema)
    app.router.add_get(f"{prefix}/flows", list_flows)
    app.router.add_get(prefix + "/flows/{namespace}/{id}", get_flow)
    app.router.add_get(prefix + "/flows/{namespace}/{id}/revisions", flow_revisions)
    app.router.add_get(prefix + "/flows/{namespace}/{id}/diff", flow_diff)
    app.router.add_put(prefix + "/flows/{namespace}/{id}", put_flow)
    app.router.add_delete(prefix + "/flows/{namespace}/{id}", delete_flow)
