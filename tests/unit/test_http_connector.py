"""`http.request` against a local aiohttp server (plain and TLS), run as a worker runs it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.connectors.network_policy import DENY_ENV, NetworkPolicy
from headrace.flow.loader import load_flow
from headrace.states import State
from headrace.testing import TaskRun, run_task
from tests.unit.test_flow_loader import only_error

SEEN: list[dict[str, Any]] = []


async def echo(request: web.Request) -> web.Response:
    """Answers with what it received: method, headers, body, form."""
    body = await request.read()
    seen = {
        "method": request.method,
        "path": request.path_qs,
        "content_type": request.headers.get("Content-Type", ""),
        "authorization": request.headers.get("Authorization"),
        "api_key": request.headers.get("X-Api-Key"),
        "user_agent": request.headers.get("User-Agent"),
        "body": body.decode(errors="replace"),
    }
    SEEN.append(seen)
    return web.json_response(seen, headers={"X-Many": "one"})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"the reason for {code}")


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.query.get("to", "/echo"))


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 5000)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    return app


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    SEEN.clear()
    async with TestServer(make_app(), host="127.0.0.1") as test_server:
        yield test_server


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_url(ca: trustme.CA) -> AsyncIterator[str]:
    """The echo route of a server whose certificate `ca` signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(make_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://127.0.0.1:{port}/echo"
    await runner.cleanup()


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def request(properties: dict[str, Any], **kwargs: Any) -> TaskRun:
    return await run_task("http.request", properties, **kwargs)


async def test_get_gives_code_headers_body_and_uri(server: TestServer) -> None:
    run = await request({"uri": url(server, "/echo?q=1")})
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["code"] == 200
    assert run.outputs["headers"]["X-Many"] == ["one"]
    assert '"path": "/echo?q=1"' in run.outputs["body"].replace('":"', '": "')
    assert run.outputs["uri"] == url(server, "/echo?q=1")
    assert run.outputs["length"] == len(run.outputs["body"].encode())
    assert run.messages[-1].startswith(f"GET {url(server, '/echo?q=1')} -> 200 (")


async def test_bodies_json_raw_and_forms(server: TestServer) -> None:
    runs = [
        await request({"uri": url(server, "/echo"), "method": "POST", "body": {"a": [1, 2]}}),
        await request(
            {"uri": url(server, "/echo"), "method": "PUT", "body": "plain words"}
            | {"contentType": "text/plain"}
        ),
        await request({"uri": url(server, "/echo"), "method": "POST", "formData": {"u": "x y"}}),
        await request(
            {"uri": url(server, "/echo"), "method": "POST", "formData": {"user": "Jo"}}
            | {"contentType": "multipart/form-data"}
        ),
    ]
    assert [run.state for run in runs] == [State.SUCCESS] * 4, [run.error for run in runs]
    json_body, raw, form, multipart = SEEN
    assert (json_body["method"], json_body["body"]) == ("POST", '{"a":[1,2]}')
    assert json_body["content_type"] == "application/json"
    assert (raw["method"], raw["body"], raw["content_type"]) == ("PUT", "plain words", "text/plain")
    assert form["body"] == "u=x+y"
    assert form["content_type"] == "application/x-www-form-urlencoded"
    assert multipart["content_type"].startswith("multipart/form-data; boundary=")
    assert 'name="user"' in multipart["body"] and "Jo" in multipart["body"]


async def test_basic_and_bearer_auth(server: TestServer) -> None:
    basic = {"auth": {"type": "BASIC", "username": "ann", "password": "pw"}}
    await request({"uri": url(server, "/echo"), "options": basic})
    await request({"uri": url(server, "/echo"), "options": {"basicAuthUser": "ann"}})
    bearer = {"auth": {"type": "BEARER", "token": "tok-123456"}}
    run = await request(
        {"uri": url(server, "/echo"), "options": bearer}, secrets={"T": "tok-123456"}
    )
    assert [seen["authorization"] for seen in SEEN] == [
        "Basic YW5uOnB3",
        "Basic YW5uOg==",
        "Bearer tok-123456",
    ]
    # The server echoed the token back: the outputs show it masked.
    assert "tok-123456" not in run.outputs["body"] and "Bearer ******" in run.outputs["body"]


async def test_an_error_answer_fails_with_its_status_and_body_unless_allowed(
    server: TestServer,
) -> None:
    run = await request({"uri": url(server, "/status/404")})
    assert run.state is State.FAILED
    assert run.error == f"GET {url(server, '/status/404')} answered 404: the reason for 404"
    allowed = await request({"uri": url(server, "/status/503"), "options": {"allowFailed": True}})
    assert allowed.state is State.SUCCESS and allowed.outputs["code"] == 503
    legacy = await request({"uri": url(server, "/status/500"), "allowFailed": True})
    assert legacy.state is State.SUCCESS and legacy.outputs["code"] == 500


async def test_redirects_are_followed_unless_asked_not_to(server: TestServer) -> None:
    run = await request({"uri": url(server, "/redirect"), "method": "POST", "body": "x"})
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["uri"] == url(server, "/echo") and SEEN[-1]["method"] == "GET"
    assert "-> 302, to /echo" in run.messages[0]
    # Credentials go to the origin they were meant for, not to where it redirects.
    elsewhere = f"http://localhost:{server.port}/echo"
    bearer = {"auth": {"type": "BEARER", "token": "tok-123456"}}
    for to in ("/echo", elsewhere):
        await request(
            {"uri": url(server, f"/redirect?to={to}"), "options": bearer}
            | {"headers": {"X-Api-Key": "k-987654", "User-Agent": "flows/1"}}
        )
    assert [seen["authorization"] for seen in SEEN[-2:]] == ["Bearer tok-123456", None]
    assert [seen["api_key"] for seen in SEEN[-2:]] == ["k-987654", None]
    assert [seen["user_agent"] for seen in SEEN[-2:]] == ["flows/1", "flows/1"]
    kept = await request({"uri": url(server, "/redirect"), "options": {"followRedirects": False}})
    assert kept.outputs["code"] == 302 and kept.outputs["headers"]["Location"] == ["/echo"]


async def test_malformed_urls_and_redirects_fail_saying_why(server: TestServer) -> None:
    spaced = await request({"uri": url(server, "/echo") + "?q=50% off&x=%41"})
    assert spaced.state is State.SUCCESS, spaced.error  # quoted, not sent raw
    assert SEEN[-1]["path"] == "/echo?q=50%25+off&x=A"
    away = await request({"uri": url(server, "/redirect?to=file:///etc/passwd")})
    assert away.state is State.FAILED
    assert (
        away.error
        == f"{url(server, '/redirect?to=file:///etc/passwd')} redirects to file:///etc/passwd, not a web URL"
    )
    broken = await request({"uri": "http://[::1/x"})
    assert broken.state is State.FAILED and "Invalid IPv6 URL" in (broken.error or "")


async def test_timeouts_refusals_and_size_limits_fail_saying_why(server: TestServer) -> None:
    slow = await request({"uri": url(server, "/slow"), "options": {"readTimeout": "PT0.2S"}})
    assert slow.state is State.FAILED and "no answer in time" in (slow.error or "")
    big = await request({"uri": url(server, "/big"), "options": {"maxContentLength": 4096}})
    assert big.state is State.FAILED
    assert "over options.maxContentLength (4096 bytes)" in (big.error or "")
    port = server.port
    await server.close()
    refused = await request({"uri": f"http://127.0.0.1:{port}/echo"})
    assert refused.state is State.FAILED
    assert (refused.error or "").startswith(f"could not connect to 127.0.0.1:{port}")


async def test_bad_properties_are_refused_by_name() -> None:
    bad = [
        ({"uri": "ftp://example.com/x"}, "must be an http or https URL"),
        ({"uri": "http://x", "body": "a", "formData": {"b": 1}}, "not both"),
        ({"uri": "http://x", "method": "FETCH"}, "invalid property 'method'"),
        ({"uri": "http://x", "options": {"auth": {"type": "BEARER"}}}, "BEARER auth needs"),
    ]
    for properties, reason in bad:
        run = await request(properties)
        assert run.state is State.FAILED and reason in (run.error or ""), run.error


def test_an_expression_in_uri_waits_for_its_value() -> None:
    flow = load_flow(
        "id: f\nnamespace: n\ninputs:\n  - {id: url, type: URI}\ntasks:\n"
        "  - {id: call, type: http.request, uri: '{{ inputs.url }}'}\n"
        "  - {id: other, type: http.request, uri: '{{ inputs.url }}/v1', method: POST}\n"
    )
    assert [task.type for task in flow.tasks] == ["http.request", "http.request"]


def test_a_wrong_property_is_refused_at_validation_with_its_line() -> None:
    source = (
        "id: f\nnamespace: n\ntasks:\n"
        "  - id: call\n    type: io.kestra.plugin.core.http.Request\n"
        "    uri: http://example.com\n    method: FETCH\n"
    )
    error = only_error(source)
    assert (error.line, error.path) == (7, "tasks[0].method")


async def test_tls_verified_by_default_by_a_given_ca_or_not_at_all(
    tls_url: str, ca: trustme.CA
) -> None:
    target = tls_url
    unknown = await request({"uri": target})
    assert unknown.state is State.FAILED and "certificate" in (unknown.error or "").lower()
    pem = ca.cert_pem.bytes().decode()
    trusted = await request({"uri": target, "options": {"ssl": {"caCertificate": pem}}})
    assert trusted.state is State.SUCCESS, trusted.error
    insecure = await request({"uri": target, "sslOptions": {"insecureTrustAllCertificates": True}})
    assert insecure.state is State.SUCCESS, insecure.error


async def test_the_operators_deny_list_holds_for_addresses_names_and_redirects(
    server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DENY_ENV, "private")
    literal = await request({"uri": url(server, "/echo")})
    assert literal.state is State.FAILED
    assert literal.error == f"127.0.0.1 is an address the workers may not reach ({DENY_ENV})"
    by_name = await request({"uri": f"http://localhost:{server.port}/echo"})
    assert by_name.state is State.FAILED and "may not reach" in (by_name.error or "")
    monkeypatch.setenv(DENY_ENV, "127.0.0.0/8")  # IPv4 networks hold for IPv6 forms too
    for host in ("[::ffff:127.0.0.1]", "2130706433", "127.1"):
        hidden = await request({"uri": f"http://{host}:{server.port}/echo"})
        assert hidden.state is State.FAILED and "may not reach" in (hidden.error or ""), host
    monkeypatch.setenv(DENY_ENV, "localhost")  # 127.0.0.1 itself is allowed now
    to = f"http://localhost:{server.port}/echo"
    redirected = await request({"uri": url(server, f"/redirect?to={to}")})
    assert redirected.state is State.FAILED
    assert redirected.error == f"localhost is a host the workers may not reach ({DENY_ENV})"
    monkeypatch.setenv(DENY_ENV, "10.0.0.0/8")  # an address, reached by a redirect
    redirected = await request({"uri": url(server, "/redirect?to=http://10.1.2.3/echo")})
    assert redirected.error == f"10.1.2.3 is an address the workers may not reach ({DENY_ENV})"
    assert SEEN == []  # no request reached /echo


def test_deny_list_syntax() -> None:
    policy = NetworkPolicy.parse(" 10.0.0.0/8, 169.254.169.254 ,metadata.google.internal.,")
    assert [str(n) for n in policy.networks] == ["10.0.0.0/8", "169.254.169.254/32"]
    assert policy.hosts == {"metadata.google.internal"} and not policy.deny_private
    assert NetworkPolicy.parse("") == NetworkPolicy()  # denies nothing
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is neither"):
        NetworkPolicy.parse("10.0.0.0/33")
