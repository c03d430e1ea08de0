"""`GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document (headrace/openapi.py).

Public, as Kestra serves its own: it holds nothing secret (what the open-source code
already says), and the tools that read it (Swagger UI, schemathesis, client generators)
fetch it without a token. `Access-Control-Allow-Origin: *` lets a Swagger UI served from
elsewhere load it; the other routes still answer no CORS request (browser.py).
"""

from __future__ import annotations

from aiohttp import web

ROUTE = "/openapi.json"


async def openapi_json(request: web.Request) -> web.Response:
    # Imported on first use: the document imports the API modules, which import this one.
    from headrace.openapi import openapi_json_bytes

    return web.Response(
        body=openapi_json_bytes(),
        content_type="application/json",
        headers={"Access-Control-Allow-Origin": "*"},
    )


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + ROUTE, openapi_json)
