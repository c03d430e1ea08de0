"""`GET /api/v1/namespaces`: the namespaces that hold flows, each with its number of
flows, for the web UI's namespace list and filters (one answer, not every flow's source).

A namespace counts its own flows; `company` and `company.team` are listed apart, as the
flows list's `namespace` filter (which takes sub-namespaces too) cannot tell them apart.
"""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import json_response


async def list_namespaces(request: web.Request) -> web.Response:
    counts = Counter(record.namespace for record in gateway(request).flows.list())
    results = [{"namespace": name, "flows": counts[name]} for name in sorted(counts)]
    return json_response({"results": results, "total": len(results)})


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/namespaces", list_namespaces)
