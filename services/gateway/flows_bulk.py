"""`POST /api/v1/flows/bulk`: apply many flows at once, all or nothing (`flow apply`).

Kestra's endpoint of the same path, with what GitOps needs on top. The body is either
JSON, `{"flows": [{"name": "flows/etl.yaml", "source": "<yaml>"}, ...]}` (the names are
the files the errors point at), or YAML documents separated by `---` lines, as Kestra
takes them (named `document 1`, `document 2`...). Query: `dryRun=true` answers the plan
and changes nothing; `delete=true` also deletes the flows of the namespaces concerned
that the request lacks (Kestra's `delete`, here off unless asked); `namespace` (repeatable)
names those namespaces (every flow must be in one), else they are the flows'.

Every flow is validated before anything is sent: one invalid file is a 422 listing every
error of every file (file, line, column, field, reason), and nothing changes. Then the
changes go to the `flows` topic as one record (`FlowStore.apply`), which every reader
applies whole: a crash, a refusal or a timeout leaves all of them applied or none.
The answer lists each flow: created, updated (from which revision to which, with the
unified diff of its source), unchanged, or deleted.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow
from headrace.flow_diff import unified_diff
from headrace.flow_log import ChangeOutcome
from headrace.flow_store import ChangesTooLarge, FlowStore, FlowsUnavailable
from headrace.messages import FlowChangeAction, FlowChangeItem, FlowRevision
from headrace.services.gateway.bodies import YAML_TYPES, query_bool
from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import ApiError, json_response
from headrace.topics.definitions import FLOWS, MAX_MESSAGE_BYTES

# A request's body: a change set must fit in one record of `flows` (1 MiB), and JSON
# escaping makes the body larger than the sources. Far above that, and still bounded.
MAX_BULK_BODY_BYTES = 4 * 1024 * 1024
MAX_BULK_FLOWS = 2_000
VALIDATING_AT_ONCE = 4
# Sources past this are refused before validation: twice what one record of `flows`
# holds, so that a set near the limit is still tried (the producer has the last word)
# and a far larger one costs no validation.
MAX_SOURCES_BYTES = 2 * MAX_MESSAGE_BYTES
CHUNK_BYTES = 64 * 1024
# Kestra's separator of YAML documents: `---` alone on its line (a block scalar's lines
# are indented, so none of a flow's own lines can be one).
_DOCUMENT_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)

CREATED, UPDATED, UNCHANGED, DELETED = "created", "updated", "unchanged", "deleted"


@dataclass(frozen=True, slots=True)
class Document:
    name: str  # what errors point at: a file name, or "document N"
    source: str


@dataclass(frozen=True, slots=True)
class Loaded:
    document: Document
    flow: Flow

    @property
    def key(self) -> tuple[str, str]:
        return (self.flow.namespace, self.flow.id)


@dataclass(frozen=True, slots=True)
class Planned:
    """One flow's part of the plan; `source` is None for a deletion."""

    namespace: str
    flow_id: str
    name: str | None
    source: str | None
    current: FlowRevision | None  # its latest live revision, when there is one

    @property
    def action(self) -> str:
        if self.source is None:
            return DELETED
        if self.current is None:
            return CREATED
        return UNCHANGED if self.current.source == self.source else UPDATED

    def change(self) -> FlowChangeItem:
        if self.source is None:
            return FlowChangeItem(self.namespace, self.flow_id, FlowChangeAction.DELETE, "")
        return FlowChangeItem(self.namespace, self.flow_id, FlowChangeAction.SAVE, self.source)


async def bulk_flows(request: web.Request) -> web.Response:
    gw = gateway(request)
    dry_run, delete = query_bool(request, "dryRun"), query_bool(request, "delete")
    namespaces = request.query.getall("namespace", [])
    documents = await _read_documents(request)
    if not documents and not (delete and namespaces):
        raise ApiError(400, "no flows in the request: send at least one")
    sources = sum(len(document.source.encode()) for document in documents)
    if sources > MAX_SOURCES_BYTES:
        # Far over what one record holds: say so before validating every flow.
        raise ApiError(
            413,
            f"these flows are too large to apply as one: their sources are {sources:,} bytes,"
            f" and the {FLOWS.name} topic takes records of up to {MAX_MESSAGE_BYTES:,} bytes"
            " (nothing was changed); apply fewer flows at a time (each part is then all or"
            " nothing)",
        )
    loaded = await _validate(request, documents, namespaces)
    try:
        await gw.flows.read_up_to_date()  # plan against every change made so far
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    plan = _plan(
        gw.flows, loaded, namespaces or sorted({item.flow.namespace for item in loaded}), delete
    )
    changing = [item for item in plan if item.action != UNCHANGED]
    if dry_run or not changing:
        return json_response(_answer([_planned_json(item) for item in plan], dry_run=dry_run))
    try:
        outcomes = await gw.flows.apply([item.change() for item in changing])
    except ChangesTooLarge as exc:
        raise ApiError(413, str(exc)) from exc
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    done = iter(outcomes)  # one per change sent, in the plan's order
    results = [
        _planned_json(item)
        if item.action == UNCHANGED
        else _applied_json(gw.flows, item, next(done))
        for item in plan
    ]
    return json_response(_answer(results, dry_run=False))


async def _read_body(request: web.Request) -> bytes:
    """The body, refused (413) past MAX_BULK_BODY_BYTES: larger than other requests
    may be (the application's limit), since a folder of flows is."""
    too_large = ApiError(
        413,
        f"a bulk request may hold at most {MAX_BULK_BODY_BYTES:,} bytes: apply fewer flows"
        " at a time",
    )
    if (request.content_length or 0) > MAX_BULK_BODY_BYTES:
        raise too_large
    body = bytearray()
    while chunk := await request.content.read(CHUNK_BYTES):
        body += chunk
        if len(body) > MAX_BULK_BODY_BYTES:
            raise too_large
    return bytes(body)


async def _read_documents(request: web.Request) -> list[Document]:
    if request.content_type == "application/json":
        documents = _json_documents(await _read_body(request))
    elif request.content_type in YAML_TYPES:
        try:
            text = (await _read_body(request)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ApiError(400, f"the body is not UTF-8: {exc}") from exc
        parts = [part.strip("\n") for part in _DOCUMENT_SEPARATOR.split(text)]
        documents = [
            Document(f"document {number}", part + "\n")
            for number, part in enumerate((p for p in parts if p.strip()), start=1)
        ]
    else:
        raise ApiError(
            415,
            'expected the flows as JSON (application/json: {"flows": [{"name": ...,'
            f' "source": ...}}]}}) or YAML documents (application/x-yaml), got'
            f" {request.content_type}",
        )
    if len(documents) > MAX_BULK_FLOWS:
        raise ApiError(
            413, f"{len(documents)} flows in one request, over the {MAX_BULK_FLOWS:,} allowed"
        )
    return documents


def _json_documents(data: bytes) -> list[Document]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON body: {exc}") from exc
    flows = body.get("flows") if isinstance(body, dict) else None
    if not isinstance(flows, list):
        raise ApiError(400, 'the body must be a JSON object with a "flows" list')
    documents = []
    for index, item in enumerate(flows):
        if not isinstance(item, dict) or not isinstance(item.get("source"), str):
            raise ApiError(400, f'flows[{index}] must be an object with a string "source"')
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, f"flows[{index}].name must be a string")
        documents.append(Document(name or f"flows[{index}]", item["source"]))
    return documents


async def _validate(
    request: web.Request, documents: list[Document], namespaces: list[str]
) -> list[Loaded]:
    """Every document's flow; a 422 listing every error of every document if any is
    invalid, duplicated, or outside `namespaces` (when given)."""
    loader = gateway(request).flow_loader
    # A few at a time: one request must not queue every flow ahead of the webhooks and
    # single saves that share the loader's processes.
    turns = asyncio.Semaphore(VALIDATING_AT_ONCE)

    async def load(document: Document) -> Flow:
        async with turns:
            return await loader.load(document.source, document.name)

    results = await asyncio.gather(
        *(load(document) for document in documents), return_exceptions=True
    )
    errors: list[dict[str, Any]] = []
    loaded: list[Loaded] = []
    seen: dict[tuple[str, str], str] = {}
    for document, result in zip(documents, results, strict=True):
        if isinstance(result, FlowValidationError):
            errors += [{"file": document.name, **error} for error in result.to_json()]
            continue
        if isinstance(result, BaseException):
            raise result
        item = Loaded(document, result)
        namespace, flow_id = item.key
        if item.key in seen:
            errors.append(
                _error(
                    document.name, "id", f"flow {namespace}/{flow_id} is also in {seen[item.key]}"
                )
            )
            continue
        if namespaces and namespace not in namespaces:
            errors.append(
                _error(
                    document.name,
                    "namespace",
                    f"{namespace!r} is not among the namespaces of the request"
                    f" ({', '.join(namespaces)})",
                )
            )
            continue
        seen[item.key] = document.name
        loaded.append(item)
    if errors:
        invalid = len({error["file"] for error in errors})
        raise ApiError(
            422, f"{invalid} of {len(documents)} flows are invalid: nothing was applied", errors
        )
    return loaded


def _error(name: str, path: str, message: str) -> dict[str, Any]:
    return {
        "file": name,
        "path": path,
        "line": None,
        "column": None,
        "message": message,
        "hint": None,
    }


def _plan(
    flows: FlowStore, loaded: list[Loaded], namespaces: list[str], delete: bool
) -> list[Planned]:
    plan = [
        Planned(*item.key, item.document.name, item.document.source, flows.get(*item.key))
        for item in loaded
    ]
    if delete:
        wanted = {item.key for item in loaded}
        for namespace in namespaces:
            # The listing holds sub-namespaces too: only those named are this request's.
            plan += [
                Planned(revision.namespace, revision.flow_id, None, None, revision)
                for revision in flows.list(namespace)
                if revision.namespace == namespace
                and (revision.namespace, revision.flow_id) not in wanted
            ]
    return plan


def _planned_json(item: Planned) -> dict[str, Any]:
    """What the plan says of a flow (nothing written yet)."""
    body = _head(item, item.action)
    body["fromRevision"] = item.current.revision if item.current is not None else None
    body["revision"] = item.current.revision if item.action == UNCHANGED else None
    if item.action == UPDATED:
        assert item.current is not None and item.source is not None
        body["diff"] = _diff(item.current, item.source, item.name)
    return body


def _applied_json(flows: FlowStore, item: Planned, outcome: ChangeOutcome) -> dict[str, Any]:
    """What the change did, as the topic's readers applied it: another gateway's change
    read in between may have made it an update rather than a creation, or nothing."""
    if item.source is None:
        action = DELETED if outcome.written else UNCHANGED  # already gone
    elif not outcome.written:
        action = UNCHANGED
    else:
        action = CREATED if outcome.previous is None else UPDATED
    body = _head(item, action)
    body["fromRevision"] = outcome.previous
    body["revision"] = outcome.revision
    if action == UPDATED and item.source is not None and outcome.previous is not None:
        before = flows.get(item.namespace, item.flow_id, outcome.previous)
        if before is not None:
            body["diff"] = _diff(before, item.source, item.name)
    return body


def _head(item: Planned, action: str) -> dict[str, Any]:
    body: dict[str, Any] = {"namespace": item.namespace, "id": item.flow_id, "action": action}
    if item.name is not None:
        body["file"] = item.name
    return body


def _diff(current: FlowRevision, source: str, name: str | None) -> str:
    where = f"{current.namespace}/{current.flow_id}"
    return unified_diff(
        current.source, source, f"{where} revision {current.revision}", name or where
    )


def _answer(results: list[dict[str, Any]], *, dry_run: bool) -> dict[str, Any]:
    summary = dict.fromkeys((CREATED, UPDATED, UNCHANGED, DELETED), 0)
    for result in results:
        summary[result["action"]] += 1
    return {"dryRun": dry_run, "flows": results, "summary": summary}
