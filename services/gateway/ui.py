"""The web UI's routes: its one HTML page at `/` and every `/ui/...` address, and its
static files under `/ui/static/`.

These answer without credentials: they hold no data. The page's scripts read the API
with the credentials the user gives on its sign-in form, as `Authorization` headers
(never cookies, so the browser never sends them on its own: `browser`).

The page is served with a Content-Security-Policy that lets it run only this server's
scripts, plus its inline import map by hash; connect only here; be framed by nobody.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from importlib import resources
from pathlib import Path

from aiohttp import hdrs, web

STATIC_ROUTE = "/ui/static"
PAGE_ROUTES = ("/", "/ui", "/ui/{tail:(?!static/).*}")
IMPORT_MAP_MARK = "<!--importmap-->"
# The vendored editor changes only when tools/vendor_ui.sh pins new versions: a day in a
# cache. Our own modules are revalidated (ETag) on every load, so that after an upgrade no
# browser runs old modules beside new ones, or against an API that changed.
VENDOR_CACHE = "public, max-age=86400"
OWN_CACHE = "no-cache"
TYPES = {".js": "text/javascript", ".css": "text/css", ".json": "application/json"}


def static_dir() -> Path:
    return Path(str(resources.files("headrace.ui"))) / "static"


class UiPage:
    """The HTML shell, with the import map inlined (browsers take no external one)."""

    def __init__(self, root: Path) -> None:
        import_map = (root / "vendor" / "importmap.json").read_text("utf-8").strip()
        script = f'<script type="importmap">{import_map}</script>'
        html = (root / "index.html").read_text("utf-8")
        self.body = html.replace(IMPORT_MAP_MARK, script).encode()
        digest = base64.b64encode(hashlib.sha256(import_map.encode()).digest()).decode()
        self.csp = (
            f"default-src 'self'; script-src 'self' 'sha256-{digest}'; "
            # CodeMirror writes its styles into <style> elements (style-mod).
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )

    async def handle(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.body,
            content_type="text/html",
            charset="utf-8",
            headers={
                "Content-Security-Policy": self.csp,
                hdrs.CACHE_CONTROL: "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )


async def static_file(request: web.Request) -> web.StreamResponse:
    root = static_dir()
    relative = request.match_info["path"]
    # index.html is served only as the page (with its CSP); a NUL makes no path.
    if "\x00" in relative or relative == "index.html":
        raise web.HTTPNotFound(text="no such UI file")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise web.HTTPNotFound(text=f"no UI file {relative!r}")
    content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    response = web.FileResponse(path)
    response.content_type = content_type or "application/octet-stream"
    vendored = path.is_relative_to((root / "vendor").resolve())
    response.headers[hdrs.CACHE_CONTROL] = VENDOR_CACHE if vendored else OWN_CACHE
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# The routes above as aiohttp names them (patterns without their regular expressions),
# for the credentials middleware to let pass.
PUBLIC_ROUTES = frozenset({"/", "/ui", "/ui/{tail}", STATIC_ROUTE + "/{path}"})


def add_routes(app: web.Application) -> None:
    page = UiPage(static_dir())
    app.router.add_get(STATIC_ROUTE + "/{path:.+}", static_file)
    for route in PAGE_ROUTES:
        app.router.add_get(route, page.handle)
