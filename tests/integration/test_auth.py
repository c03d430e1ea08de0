"""Authentication, roles and browser safety of the gateway over a real socket, broker and
PostgreSQL, with the CLI as users run it.

The gateway has the session's HEADRACE_TOKEN plus a credentials file: a writer and a
reader token, a writer and a reader basic-auth user, and one extra allowed host name.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from headrace.config import Settings
from headrace.passwords import hash_password, token_digest
from headrace.services.gateway import make_app
from headrace.services.gateway.auth import Authenticator
from headrace.services.gateway.browser import HostPolicy
from headrace.services.gateway.context import Gateway
from headrace.services.gateway.credentials import load_credentials
from headrace.services.gateway.masking import MASK
from tests.integration.stacks import in_process_gateway
from tests.integration.test_gateway import triggers_on_topic

ROOT = Path(__file__).resolve().parents[2]
READER_TOKEN = "reader-token-" + uuid.uuid4().hex
WRITER_TOKEN = "writer-token-" + uuid.uuid4().hex
USERS = {"ada": ("ada-password", "writer"), "rita": ("rita-password", "reader")}
EXTRA_HOST = "headrace.test"
KEY = "auth-test-key-" + uuid.uuid4().hex
YAML = {"Content-Type": "application/x-yaml"}


def credentials_toml() -> str:
    entries = [
        f'[[tokens]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{token_digest(token)}"\n'
        for name, token, role in (
            ("ci", WRITER_TOKEN, "writer"),
            ("dashboard", READER_TOKEN, "reader"),
        )
    ]
    entries += [
        f'[[users]]\nname = "{user}"\nrole = "{role}"\npassword = "{hash_password(password)}"\n'
        for user, (password, role) in USERS.items()
    ]
    return "\n".join(entries)


@pytest.fixture(scope="module")
def auth_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("auth") / "credentials.toml"
    path.write_text(credentials_toml())
    return dataclasses.replace(settings, credentials_file=str(path), allowed_hosts=(EXTRA_HOST,))


@pytest.fixture(scope="module")
async def base_url(auth_settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(auth_settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """No credentials by default: each request says what it sends."""
    async with aiohttp.ClientSession(base_url) as session:
        yield session


@pytest.fixture
def namespace() -> str:
    return f"test.auth{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str) -> dict[str, str]:
    pair = f"{user}:{USERS[user][0]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def hook_flow(namespace: str, flow_id: str = "hooked") -> str:
    return f"""\
id: {flow_id}
namespace: {namespace}
inputs:
  - id: name
    type: STRING
    defaults: world
tasks:
  - id: greet
    type: log
    message: "hi {{{{ inputs.name }}}}"
triggers:
  - id: push
    type: webhook
    key: {KEY}   # the URL's secret
"""


async def put_flow(http: aiohttp.ClientSession, namespace: str, token: str, flow_id: str) -> None:
    url = f"/api/v1/flows/{namespace}/{flow_id}"
    headers = {**YAML, **bearer(token)}
    async with http.put(url, data=hook_flow(namespace, flow_id), headers=headers) as response:
        assert response.status in (200, 201), await response.text()


async def status_and_body(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


def concrete(pattern: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", pattern)


async def test_every_route_but_webhooks_and_health_needs_credentials(
    http: aiohttp.ClientSession, auth_settings: Settings
) -> None:
    # The route table of the real application: a route added later is covered too.
    app = make_app(
        cast(Gateway, None),
        Authenticator(load_credentials(auth_settings)),
        HostPolicy.from_settings(auth_settings),
    )
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    # The probes, the OpenAPI document (tools fetch it without a token), and the web UI's
    # page and files (no data in them: its scripts call the API with credentials).
    probes = ("/healthz", "/readyz", "/api/v1/openapi.json")
    ui_pages = ("/", "/ui", "/ui/{tail}", "/ui/static/{path}")
    public = {path for _, path in routes if path in probes + ui_pages or "/webhook/" in path}
    assert len(public) == 8 and len(routes) >= 18
    for method, path in sorted(routes):
        if path in public:
            continue
        # A JSON body: what a script sends; the browser checks let it through to auth.
        async with http.request(
            method, concrete(path), data="{}", headers={"Content-Type": "application/json"}
        ) as response:
            status, body = await status_and_body(response)
        assert status == 401, (method, path, body)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="headrace"')
        assert "Authorization: Bearer" in body["message"]


async def test_webhooks_and_health_need_no_credentials(
    http: aiohttp.ClientSession, namespace: str, settings: Settings
) -> None:
    async with http.get("/healthz") as response:
        assert (await status_and_body(response))[0] == 200
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    hook = f"/api/v1/executions/webhook/{namespace}/hooked/{KEY}"
    # A webhook is made to be called from anywhere: a form from another site too.
    form = {"Origin": "https://ci.example"}
    async with http.post(hook, data={"name": "form"}, headers=form) as response:
        status, started = await status_and_body(response)
    assert status == 202
    published = await triggers_on_topic(settings, namespace)
    assert [t.execution_id for t in published] == [started["id"]]


async def test_bearer_tokens_and_basic_users_are_accepted(
    http: aiohttp.ClientSession, api_token: str
) -> None:
    for credentials in (
        bearer(api_token),
        bearer(WRITER_TOKEN),
        bearer(READER_TOKEN),
        basic("ada"),
        basic("rita"),
    ):
        async with http.get("/api/v1/flows", headers=credentials) as response:
            assert (await status_and_body(response))[0] == 200, credentials
    wrong = [
        bearer("not-a-token"),
        {"Authorization": "Basic " + base64.b64encode(b"ada:wrong").decode()},
    ]
    for credentials in wrong:
        async with http.get("/api/v1/flows", headers=credentials) as response:
            status, body = await status_and_body(response)
        assert status == 401 and "Basic" in response.headers["WWW-Authenticate"], body


async def test_a_reader_sees_keys_masked_and_cannot_write(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    flow_url = f"/api/v1/flows/{namespace}/hooked"
    reads = [flow_url, f"{flow_url}?revision=1", f"/api/v1/flows?namespace={namespace}"]
    for reader in (bearer(READER_TOKEN), basic("rita")):
        for url in reads:
            async with http.get(url, headers=reader) as response:
                status, body = await status_and_body(response)
            assert status == 200 and KEY not in str(body), url
            assert MASK in str(body)
        async with http.get(flow_url, headers=reader) as response:
            flow = (await status_and_body(response))[1]
        assert flow["triggers"][0]["key"] == MASK
        assert f"key: {MASK}   # the URL's secret" in flow["source"]
        async with http.get(
            "/api/v1/triggers", params={"namespace": namespace}, headers=reader
        ) as response:
            status, triggers = await status_and_body(response)
        assert status == 200 and triggers["total"] == 1 and KEY not in str(triggers)
        # Validating changes nothing: a reader may.
        async with http.post(
            "/api/v1/flows/validate", data=hook_flow(namespace), headers={**YAML, **reader}
        ) as response:
            assert (await status_and_body(response))[1]["valid"] is True
        writes = [
            ("PUT", flow_url, hook_flow(namespace), YAML),
            ("DELETE", flow_url, None, {}),
            ("POST", f"/api/v1/executions/{namespace}/hooked", "{}", {}),
            ("PUT", f"/api/v1/triggers/{namespace}/hooked/push", '{"disabled": true}', {}),
            # Even as a dry run: the plan compares with the sources as stored, keys included.
            ("POST", "/api/v1/flows/bulk?dryRun=true", '{"flows": []}', {}),
        ]
        for method, url, data, headers in writes:
            headers = {"Content-Type": "application/json", **headers, **reader}
            async with http.request(method, url, data=data, headers=headers) as response:
                status, body = await status_and_body(response)
            assert status == 403 and "writer role" in body["message"], (method, url, body)
    for writer in (bearer(WRITER_TOKEN), basic("ada")):
        async with http.get(flow_url, headers=writer) as response:
            flow = (await status_and_body(response))[1]
        assert flow["triggers"][0]["key"] == KEY and f"key: {KEY}" in flow["source"]
    async with http.get(flow_url, headers=bearer(WRITER_TOKEN)) as response:
        assert (await status_and_body(response))[0] == 200  # the reader deleted nothing


async def test_a_reader_lists_and_diffs_revisions_with_keys_masked(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    flow_url = f"/api/v1/flows/{namespace}/hooked"
    async with http.delete(flow_url, headers=bearer(WRITER_TOKEN)) as response:
        assert response.status == 204
    async with http.get(f"{flow_url}/revisions", headers=bearer(READER_TOKEN)) as response:
        status, revisions = await status_and_body(response)
    assert status == 200 and [r["deleted"] for r in revisions] == [False, True]
    diff_url = f"{flow_url}/diff?from=1&to=2"  # to the deletion: every line removed
    async with http.get(diff_url, headers=bearer(READER_TOKEN)) as response:
        status, diff = await status_and_body(response)
    assert status == 200 and KEY not in str(diff)
    assert f"-    key: {MASK}   # the URL's secret" in diff["diff"]
    async with http.get(diff_url, headers=bearer(WRITER_TOKEN)) as response:
        assert f"-    key: {KEY}" in (await status_and_body(response))[1]["diff"]


async def test_cross_site_requests_are_refused_and_start_nothing(
    http: aiohttp.ClientSession, namespace: str, settings: Settings, base_url: str
) -> None:
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    start = f"/api/v1/executions/{namespace}/hooked"
    name = {"name": 'x"; id > /tmp/pwned; echo "'}
    # What a page on another site can make a browser send, with or without the basic
    # credentials the browser cached for the gateway.
    refused: list[tuple[dict[str, str], Any]] = [
        ({"Origin": "http://evil.example"}, name),  # the tester's form post
        ({"Origin": "http://evil.example", **basic("ada")}, name),
        ({"Origin": "http://evil.example", **bearer(WRITER_TOKEN)}, name),
        ({"Origin": "null", **basic("ada")}, name),
        ({"Origin": "http://localhost:3000", **basic("ada")}, name),  # another local app
        (basic("ada"), name),  # an old browser that sends no Origin
        ({**basic("ada"), "Content-Type": "text/plain"}, '{"name": "x"}'),
        (
            {"Sec-Fetch-Site": "cross-site", **basic("ada"), "Content-Type": "application/json"},
            "{}",
        ),
        ({"Sec-Fetch-Site": "same-site", **bearer(WRITER_TOKEN)}, None),
        # A form (multipart) POST: what a page's <form> sends, cookies or cached basic
        # credentials included.
        ({**basic("ada"), "Content-Type": "multipart/form-data; boundary=x"}, "--x--\r\n"),
    ]
    for headers, data in refused:
        async with http.post(start, data=data, headers=headers) as response:
            status, body = await status_and_body(response)
        assert status == 403, (headers, body)
    kill = "/api/v1/executions/some-execution/kill"
    # As a browser sends it: no Content-Type at all (aiohttp adds one unless told).
    async with http.post(
        kill, headers=basic("ada"), skip_auto_headers=["Content-Type"]
    ) as response:
        assert "Content-Type" not in response.request_info.headers
        assert (await status_and_body(response))[0] == 403
    async with http.delete(
        f"/api/v1/flows/{namespace}/hooked",
        headers={"Origin": "http://evil.example", **basic("ada")},
    ) as response:
        assert (await status_and_body(response))[0] == 403
    assert await triggers_on_topic(settings, namespace) == []

    # What scripts and the CLI send passes: a bearer token with any body, a JSON body
    # with basic auth, and a page of the gateway's own origin.
    accepted: list[tuple[dict[str, str], Any]] = [
        (bearer(WRITER_TOKEN), {"name": "form"}),
        ({**basic("ada"), "Content-Type": "application/json"}, '{"name": "json"}'),
        ({"Origin": base_url, **bearer(WRITER_TOKEN)}, None),
    ]
    ids = []
    for headers, data in accepted:
        async with http.post(start, data=data, headers=headers) as response:
            status, body = await status_and_body(response)
        assert status == 202, (headers, body)
        ids.append(body["id"])
    published = await triggers_on_topic(settings, namespace)
    assert sorted(t.execution_id for t in published) == sorted(ids)
    assert sorted(t.inputs["name"] for t in published) == ["form", "json", "world"]
    # Raw bytes (the web UI's uploads) need a preflight from any other page: basic auth
    # may send them.
    upload = f"/api/v1/namespaces/{namespace}/files?path=/from-the-ui.txt"
    octets = {**basic("ada"), "Content-Type": "application/octet-stream"}
    async with http.post(upload, data=b"hello", headers=octets) as response:
        assert response.status in (200, 201), await response.text()


async def test_a_foreign_host_is_refused_on_every_route(
    http: aiohttp.ClientSession, namespace: str, settings: Settings, base_url: str
) -> None:
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    port = base_url.rsplit(":", 1)[1]
    hook = f"/api/v1/executions/webhook/{namespace}/hooked/{KEY}"
    start = f"/api/v1/executions/{namespace}/hooked"
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}"):
        headers = {"Host": host, **bearer(WRITER_TOKEN)}
        for method, url in (("GET", "/api/v1/flows"), ("POST", start), ("POST", hook)):
            async with http.request(method, url, json={}, headers=headers) as response:
                status, body = await status_and_body(response)
            assert status == 403 and "HEADRACE_ALLOWED_HOSTS" in body["message"], (host, url)
        async with http.get("/healthz", headers={"Host": host}) as response:
            assert response.status == 403
    assert await triggers_on_topic(settings, namespace) == []
    for host in (f"localhost:{port}", f"{EXTRA_HOST}:{port}", f"[::1]:{port}", "10.0.0.7"):
        async with http.get(
            "/api/v1/flows", headers={"Host": host, **bearer(WRITER_TOKEN)}
        ) as response:
            assert (await status_and_body(response))[0] == 200, host


def run_cli(
    base_url: str, *args: str, config_home: Path, token: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: HEADRACE_TOKEN only when given, the config folder ours."""
    env = {k: v for k, v in os.environ.items() if k != "HEADRACE_TOKEN"}
    env |= {"HEADRACE_URL": base_url, "XDG_CONFIG_HOME": str(config_home)}
    if token is not None:
        env["HEADRACE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_finds_the_token_file_and_explains_a_401(
    base_url: str, api_token: str, tmp_path: Path
) -> None:
    home = tmp_path / "config"
    refused = await asyncio.to_thread(run_cli, base_url, "flow", "list", config_home=home)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "needs a token and none was sent" in refused.stderr
    assert "HEADRACE_TOKEN" in refused.stderr and str(home / "headrace" / "token") in refused.stderr

    (home / "headrace").mkdir(parents=True, mode=0o700)
    token_file = home / "headrace" / "token"
    token_file.write_text("not-the-token\n")
    token_file.chmod(0o600)
    wrong = await asyncio.to_thread(run_cli, base_url, "flow", "list", config_home=home)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "did not accept the credentials sent" in wrong.stderr

    token_file.write_text(api_token + "\n")  # what `server local` writes
    found = await asyncio.to_thread(run_cli, base_url, "flow", "list", config_home=home)
    assert found.returncode == 0, found.stderr
    printed = await asyncio.to_thread(run_cli, base_url, "auth", "token", config_home=home)
    assert printed.stdout.strip() == api_token
    # --token and HEADRACE_TOKEN win over the file.
    flag = await asyncio.to_thread(
        run_cli, base_url, "--token", "nope", "flow", "list", config_home=home
    )
    assert flag.returncode == 1 and "did not accept" in flag.stderr
    env = await asyncio.to_thread(
        run_cli, base_url, "flow", "list", config_home=home, token=READER_TOKEN
    )
    assert env.returncode == 0, env.stderr


async def test_export_then_apply_round_trips_for_a_writer_and_masks_for_a_reader(
    http: aiohttp.ClientSession, base_url: str, namespace: str, tmp_path: Path
) -> None:
    await put_flow(http, namespace, WRITER_TOKEN, "hooked")
    home = tmp_path / "config"
    written = tmp_path / "writer"
    exported = await asyncio.to_thread(
        run_cli, base_url, "flow", "export", str(written), "--namespace", namespace,
        config_home=home, token=WRITER_TOKEN,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert (written / namespace / "hooked.yaml").read_text() == hook_flow(namespace)
    applied = await asyncio.to_thread(
        run_cli, base_url, "flow", "apply", str(written), config_home=home, token=WRITER_TOKEN
    )
    assert applied.returncode == 0, applied.stderr
    assert "0 applied" in applied.stdout  # nothing lost: the same source, no new revision

    read = tmp_path / "reader"
    exported = await asyncio.to_thread(
        run_cli, base_url, "flow", "export", str(read), "--namespace", namespace,
        config_home=home, token=READER_TOKEN,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    source = (read / namespace / "hooked.yaml").read_text()
    assert KEY not in source and f"key: {MASK}" in source
    # A masked key is no key: applying it by mistake is refused, the real key stays.
    (read / namespace / "hooked.yaml").write_text(source.replace("hi ", "hello "))
    refused = await asyncio.to_thread(
        run_cli, base_url, "flow", "apply", str(read), config_home=home, token=WRITER_TOKEN
    )
    assert refused.returncode == 1 and "key" in refused.stdout + refused.stderr
    async with http.get(
        f"/api/v1/flows/{namespace}/hooked", headers=bearer(WRITER_TOKEN)
    ) as response:
        assert (await status_and_body(response))[1]["triggers"][0]["key"] == KEY
