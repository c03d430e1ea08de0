"""The web UI's routes on a real gateway (socket, broker, PostgreSQL), without a browser:
the page and its files answer without credentials and with the headers that keep them
safe, every module the page loads exists, and nothing outside the static folder is served.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from http.client import HTTPConnection
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from headrace.config import Settings
from tests.integration.stacks import in_process_gateway

PAGE_MODULES = ("home", "flows", "flow", "executions", "execution", "dashboard", "blueprints")
PAGES = ("/", "/ui", "/ui/flows", "/ui/flows/new", "/ui/executions/x", "/ui/no/such/page")
IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.DOTALL)
SCRIPT_TAG = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL)
# Static imports and re-exports at the start of a line (minified or not), side-effect
# imports, and dynamic imports of a literal: what the browser follows when it loads a page.
STATIC_IMPORT = re.compile(
    r"""^(?:import|export)\s*[\w$\s{},*]*?\s*from\s*["']([^"']+)["']""", re.MULTILINE
)
BARE_IMPORT = re.compile(r"""^import\s*["']([^"']+)["']""", re.MULTILINE)
DYNAMIC_IMPORT = re.compile(r"""\bimport\(\s*["']([^"']+)["']\s*\)""")


@pytest.fixture(scope="module")
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """No credentials: the UI's routes must not need them."""
    async with aiohttp.ClientSession(base_url) as session:
        yield session


async def get_page(http: aiohttp.ClientSession, path: str = "/") -> tuple[str, str]:
    """The HTML page at `path` and its Content-Security-Policy."""
    async with http.get(path) as response:
        assert response.status == 200, (path, response.status)
        assert response.content_type == "text/html", path
        return await response.text(), response.headers["Content-Security-Policy"]


def csp_directives(csp: str) -> dict[str, list[str]]:
    directives = {}
    for part in csp.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def import_map_of(page: str) -> dict[str, str]:
    found = IMPORT_MAP.findall(page)
    assert len(found) == 1, "the page holds one inline import map"
    return json.loads(found[0])["imports"]


def imports_of(source: str) -> set[str]:
    return {
        *STATIC_IMPORT.findall(source),
        *BARE_IMPORT.findall(source),
        *DYNAMIC_IMPORT.findall(source),
    }


def resolve(specifier: str, importer: str, import_map: dict[str, str]) -> str:
    """The path the browser fetches for `specifier` imported by the module at `importer`."""
    if specifier.startswith(("./", "../", "/")):
        return urlsplit(urljoin("http://page" + importer, specifier)).path
    assert specifier in import_map, f"{importer} imports {specifier!r}, which the import map lacks"
    return import_map[specifier]


async def test_pages_answer_without_credentials_with_safe_headers(
    http: aiohttp.ClientSession,
) -> None:
    for path in PAGES:
        async with http.get(path) as response:
            assert response.status == 200, path
            assert response.content_type == "text/html", path
            assert response.charset == "utf-8"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-cache"
            csp = csp_directives(response.headers["Content-Security-Policy"])
            body = await response.text()
        assert "<title>headrace</title>" in body and 'src="/ui/static/app.js"' in body, path
        assert csp["frame-ancestors"] == ["'none'"]
        assert csp["default-src"] == ["'self'"]
        assert csp["connect-src"] == ["'self'"]
        assert csp["object-src"] == ["'none'"]
        assert "'unsafe-eval'" not in csp["script-src"]
        assert "'unsafe-inline'" not in csp["script-src"]


async def test_csp_allows_the_inline_import_map_by_its_hash_and_nothing_else(
    http: aiohttp.ClientSession,
) -> None:
    page, csp = await get_page(http)
    (raw_map,) = IMPORT_MAP.findall(page)
    digest = base64.b64encode(hashlib.sha256(raw_map.encode()).digest()).decode()
    script_src = csp_directives(csp)["script-src"]
    assert script_src == ["'self'", f"'sha256-{digest}'"]
    # Every other script is a file of this server: the only inline one is the map.
    for attributes, content in SCRIPT_TAG.findall(page):
        if 'type="importmap"' in attributes:
            continue
        assert 'src="/ui/static/' in attributes and not content.strip(), attributes
    assert "<!--importmap-->" not in page


async def test_static_files_are_typed_and_cached(http: aiohttp.ClientSession) -> None:
    expected = {
        "/ui/static/app.js": "text/javascript",
        "/ui/static/style.css": "text/css",
        "/ui/static/vendor/codemirror-view.js": "text/javascript",
        "/ui/static/vendor/importmap.json": "application/json",
        "/ui/static/favicon.svg": "image/svg+xml",
    }
    for path, content_type in expected.items():
        async with http.get(path) as response:
            assert response.status == 200, path
            assert response.content_type == content_type, path
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            # The vendored editor is cached; our modules are revalidated on every load,
            # so that a browser never runs old ones after an upgrade.
            cached = path.startswith("/ui/static/vendor/")
            assert ("max-age=" in response.headers["Cache-Control"]) == cached, path
            etag = response.headers["ETag"]
            await response.read()
        # Revalidation by ETag answers without the body.
        async with http.get(path, headers={"If-None-Match": etag}) as response:
            assert response.status == 304, path


async def test_every_module_and_stylesheet_the_page_loads_exists(
    http: aiohttp.ClientSession,
) -> None:
    page, _ = await get_page(http)
    import_map = import_map_of(page)
    for target in import_map.values():
        assert target.startswith("/ui/static/vendor/"), target
    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page)
    for path in stylesheets:
        async with http.get(path) as response:
            assert response.status == 200 and response.content_type == "text/css", path
    roots = re.findall(r'<script type="module" src="([^"]+)"', page)
    assert roots == ["/ui/static/app.js"]
    # From the page's script, and from every module the map names (each must exist and
    # find its own bare imports in the map, whether a page uses it yet or not).
    seen = await walk_modules(http, [*roots, *import_map.values()], import_map)
    # The walk followed the router's dynamic imports to every page.
    pages = {path for path in seen if path.startswith("/ui/static/pages/")}
    assert {f"/ui/static/pages/{name}.js" for name in PAGE_MODULES} <= pages


async def walk_modules(
    http: aiohttp.ClientSession, roots: list[str], import_map: dict[str, str]
) -> dict[str, str]:
    """Every module reachable from `roots` (path -> importer), each fetched as the
    browser would; fails on a missing one, a wrong type, or a bare name the map lacks."""
    seen = dict.fromkeys(roots, "index.html")
    queue = list(roots)
    while queue:
        path = queue.pop()
        async with http.get(path) as response:
            assert response.status == 200, f"{path} (imported by {seen[path]}) is missing"
            assert response.content_type == "text/javascript", path
            source = await response.text()
        for specifier in imports_of(source):
            target = resolve(specifier, path, import_map)
            if target not in seen:
                seen[target] = path
                queue.append(target)
    return seen


def raw_get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client normalises `..` or decodes `%2F`)."""
    host = urlsplit(base_url)
    connection = HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


TRAVERSALS = (
    "/ui/static/../..",
    "/ui/static/../../pyproject.toml",
    "/ui/static/../__init__.py",
    "/ui/static/..%2F__init__.py",
    "/ui/static/..%2F..%2F..%2Fpyproject.toml",
    "/ui/static/%2e%2e/%2e%2e/pyproject.toml",
    "/ui/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/ui/static/vendor/..%2F..%2F__init__.py",
    "/ui/static/..%5c__init__.py",
    "/ui/static/%252e%252e/__init__.py",
    "/ui/static//etc/passwd",
    "/ui/static/%2Fetc%2Fpasswd",
    "/ui/static/vendor",
    "/ui/static/no-such-file.js",
    "/ui/static/index.html",  # the page only at its addresses, with its CSP
)


async def test_nothing_outside_the_static_folder_is_served(base_url: str) -> None:
    for path in TRAVERSALS:
        status, body = await asyncio.to_thread(raw_get, base_url, path)
        assert status == 404, (path, status, body[:200])
        assert b"[project]" not in body and b"root:" not in body, path
    # A NUL is refused before any route (bodies.refuse_nul_in_url), never a 500.
    status, _ = await asyncio.to_thread(raw_get, base_url, "/ui/static/a%00b.js")
    assert status == 400
    # A `..` that stays inside the folder is only another name of a file in it.
    status, body = await asyncio.to_thread(raw_get, base_url, "/ui/static/vendor/../app.js")
    assert status == 200 and b"import" in body


async def test_the_api_still_needs_credentials(
    http: aiohttp.ClientSession, auth_headers: dict[str, str]
) -> None:
    for path in ("/api/v1", "/api/v1/flows", "/api/v1/executions"):
        async with http.get(path) as response:
            assert response.status == 401, path
            assert response.content_type == "application/json"
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="headrace"')
    async with http.get("/api/v1", headers=auth_headers) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        index = await response.json()
    assert index["name"] == "headrace" and index["api"] == "/api/v1"
    assert "/api/v1/flows" in index["endpoints"]
