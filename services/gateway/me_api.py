"""`GET /api/v1/me`: who the caller is, as its credentials name it, and its role.

The web UI asks once per page so that a reader sees the buttons that would change
something disabled, with the reason, instead of learning it from a 403 after a click.
"""

from __future__ import annotations

from aiohttp import web

from headrace.services.gateway.auth import PRINCIPAL
from headrace.services.gateway.responses import json_response


async def who_am_i(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return json_response(
        {"name": principal.name, "role": str(principal.role), "scheme": principal.scheme}
    )


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix + "/me", who_am_i)
