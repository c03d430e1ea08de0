"""`/api/v1/plugins`: the task types this gateway validates flows against, with schemas.

The list is what `headrace plugins list` prints; one type (by our name or an alias such
as Kestra's) is what `headrace plugins describe` prints.
"""

from __future__ import annotations

from aiohttp import web

from headrace.plugins import find_plugin, plugins
from headrace.services.gateway.responses import ApiError, json_response


async def list_plugins(request: web.Request) -> web.Response:
    return json_response([plugin.to_json() for plugin in plugins()])


async def get_plugin(request: web.Request) -> web.Response:
    name = request.match_info["type"]
    plugin = find_plugin(name)
    if plugin is None:
        raise ApiError(404, f"unknown task type {name!r}: GET /api/v1/plugins lists them")
    return json_response(plugin.to_json())


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/plugins", list_plugins)
    app.router.add_get(prefix + "/plugins/{type}", get_plugin)
