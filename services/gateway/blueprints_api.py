"""`/api/v1/blueprints`: the example flows shipped with headrace (the `examples/` folder,
installed as the package `headrace.examples`), to read and to copy into a namespace.

A blueprint's id is its file's stem (`hello`); only files that load as flows are
blueprints. They are read and validated once per gateway, at the first request. A copy
is the example's source with only its top-level `namespace:` (and `id:` when given)
replaced, saved like `POST /api/v1/flows` saves a flow: validated, 409 if it exists.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow, canonical_task_type
from headrace.flow.task_walk import every_task
from headrace.flow.yaml_reader import YamlProblem, read_yaml
from headrace.services.gateway.bodies import read_json_object
from headrace.services.gateway.context import gateway
from headrace.services.gateway.flows_api import create_from_source
from headrace.services.gateway.responses import ApiError, json_response

log = logging.getLogger(__name__)

PACKAGE = "headrace.examples"
ROUTE = "/blueprints"
# A source checkout installed in editable mode (`pip install -e .`) imports no
# `headrace.examples`: setuptools' editable finder maps only folders with an
# `__init__.py`, and `examples/` has none. There, the checkout's folder is read.
CHECKOUT_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The first sentence of a description: up to a full stop followed by a space or the end.
_FIRST_SENTENCE = re.compile(r"^(.+?)[.!?](?:\s|$)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Blueprint:
    id: str
    source: str
    flow: Flow

    def json(self) -> dict[str, Any]:
        description = " ".join((self.flow.description or "").split())
        match = _FIRST_SENTENCE.match(description)
        title = (match.group(1) if match else description) or self.id
        data = self.flow.model_dump(mode="json", by_alias=True, exclude_none=True)
        task_types = [
            canonical_task_type(task["type"])
            for _, task in every_task(data)
            if isinstance(task.get("type"), str)
        ]
        return {
            "id": self.id,
            "title": title,
            "description": description,
            "namespace": self.flow.namespace,
            "flowId": self.flow.id,
            "taskTypes": list(dict.fromkeys(task_types)),
            "triggerTypes": list(dict.fromkeys(t.kind for t in self.flow.triggers)),
            "inputs": len(self.flow.inputs),
            "source": self.source,
        }


def example_files() -> list[Traversable]:
    """The `*.yaml` files of the installed examples, by name."""
    try:
        folder: Traversable = resources.files(PACKAGE)
    except ModuleNotFoundError:
        if not CHECKOUT_EXAMPLES.is_dir():
            return []
        folder = CHECKOUT_EXAMPLES
    found = [entry for entry in folder.iterdir() if entry.name.endswith(".yaml")]
    return sorted(found, key=lambda entry: entry.name)


class Library:
    """The blueprints, loaded once (through the gateway's flow loader) on first use."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._blueprints: dict[str, dict[str, Any]] | None = None

    async def all(self, request: web.Request) -> dict[str, dict[str, Any]]:
        """Each blueprint's JSON, by id."""
        async with self._lock:
            if self._blueprints is None:
                self._blueprints = await self._load(request)
            return self._blueprints

    async def _load(self, request: web.Request) -> dict[str, dict[str, Any]]:
        loader = gateway(request).flow_loader
        found: dict[str, dict[str, Any]] = {}
        for entry in example_files():
            name = entry.name.removesuffix(".yaml")
            source = entry.read_text(encoding="utf-8")
            try:
                flow = await loader.load(source, f"examples/{entry.name}")
            except FlowValidationError as exc:
                log.warning("example %s is not a valid flow, not a blueprint: %s", entry.name, exc)
                continue
            found[name] = Blueprint(name, source, flow).json()
        return found


LIBRARY = web.AppKey("blueprints", Library)


async def _blueprint(request: web.Request) -> dict[str, Any]:
    blueprint_id = request.match_info["id"]
    blueprint = (await request.app[LIBRARY].all(request)).get(blueprint_id)
    if blueprint is None:
        raise ApiError(404, f"blueprint {blueprint_id[:100]!r} not found")
    return blueprint


async def list_blueprints(request: web.Request) -> web.Response:
    results = list((await request.app[LIBRARY].all(request)).values())
    return json_response({"results": results, "total": len(results)})


async def get_blueprint(request: web.Request) -> web.Response:
    return json_response(await _blueprint(request))


async def copy_blueprint(request: web.Request) -> web.Response:
    """`{"namespace": "team.data", "id": "optional new id"}`: 201 with the new flow."""
    blueprint = await _blueprint(request)
    body = await read_json_object(request)
    namespace, flow_id = body.get("namespace"), body.get("id")
    if not isinstance(namespace, str) or not namespace.strip():
        raise ApiError(400, 'expected {"namespace": "company.team"} (and optionally "id")')
    if flow_id is not None and (not isinstance(flow_id, str) or not flow_id.strip()):
        raise ApiError(400, '"id", when given, must be a flow id (text)')
    source = replace_top_level(blueprint["source"], "namespace", namespace)
    if flow_id is not None:
        source = replace_top_level(source, "id", flow_id)
    return await create_from_source(request, source)


def yaml_scalar(value: str) -> str:
    """`value` as a YAML scalar that reads back as this very text: plain when it does
    (`team.data`), else double-quoted (`"true"`, `"1.5"`, `"a: b"`)."""
    try:
        plain = read_yaml(value).data == value and value.isprintable()
    except YamlProblem:
        plain = False
    return value if plain else orjson.dumps(value).decode()


def replace_top_level(source: str, key: str, value: str) -> str:
    """`source` with the value of its top-level `key:` line replaced (its comment kept)."""
    pattern = re.compile(rf"^({re.escape(key)}:[ \t]*)([^#\n]*?)([ \t]*(?:#[^\n]*)?)$", re.M)
    replaced, count = pattern.subn(
        lambda m: m.group(1) + yaml_scalar(value) + m.group(3), source, count=1
    )
    if count == 0:  # every example has both keys at the top: a packaging mistake
        raise ApiError(500, f"the blueprint has no top-level `{key}:` line to replace")
    return replaced


def add_routes(app: web.Application, prefix: str) -> None:
    app[LIBRARY] = Library()
    app.router.add_get(prefix + ROUTE, list_blueprints)
    app.router.add_get(prefix + ROUTE + "/{id}", get_blueprint)
    app.router.add_post(prefix + ROUTE + "/{id}/copy", copy_blueprint)
