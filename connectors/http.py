"""`http.request`: one HTTP request, its answer as outputs (Kestra's `core.http.Request`)."""

from __future__ import annotations

import base64
import ssl
import time
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import aiohttp
import orjson
from pydantic import AfterValidator, BaseModel, Field, model_validator
from yarl import URL

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.network_policy import NetworkPolicy
from headrace.flow.durations import Duration

MAX_REDIRECTS = 10
REDIRECTS = frozenset({301, 302, 303, 307, 308})
WEB_SCHEMES = ("http", "https")
# What a request keeps when a redirect sends it to another site: nothing that may be a
# credential (Authorization, cookies, an API key header...).
CROSS_SITE_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "user-agent"})
ERROR_BODY_CHARS = 500  # of an error answer's body, in the attempt's error


class Method(StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"
    HEAD = "HEAD"
    OPTIONS = "OPTIONS"


def _web_url(text: str) -> str:
    if URL(text).scheme not in WEB_SCHEMES:  # URL() raises on a malformed one
        raise ValueError(f"must be an http or https URL, not {text!r}")
    return text


# Checked as a field, not by the model: when a flow is loaded a URL may still be an
# expression, and only a field's own errors are excused for holding one.
WebUrl = Annotated[str, AfterValidator(_web_url)]
"""An http or https URL."""


class AuthType(StrEnum):
    BASIC = "BASIC"
    BEARER = "BEARER"


class Auth(ConnectorProperties):
    type: AuthType
    username: str | None = None
    password: str | None = None
    token: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Auth:
        if self.type is AuthType.BASIC and self.username is None:
            raise ValueError("BASIC auth needs `username` (and usually `password`)")
        if self.type is AuthType.BEARER and not self.token:
            raise ValueError("BEARER auth needs `token`")
        return self


class Ssl(ConnectorProperties):
    insecure_trust_all_certificates: bool = Field(
        default=False,
        alias="insecureTrustAllCertificates",
        description="Accept any certificate: for tests only, it lets anyone in the middle.",
    )
    ca_certificate: str | None = Field(
        default=None,
        alias="caCertificate",
        description="PEM certificate(s) of the authority that signed the server's"
        " certificate, for private CAs (headrace's addition).",
    )


class Options(ConnectorProperties):
    auth: Auth | None = Field(
        default=None, description="BASIC (username, password) or BEARER (token)."
    )
    basic_auth_user: str | None = Field(
        default=None, alias="basicAuthUser", description="Kestra's older BASIC auth spelling."
    )
    basic_auth_password: str | None = Field(default=None, alias="basicAuthPassword")
    connect_timeout: Duration | None = Field(
        default=None, alias="connectTimeout", description="To open the connection."
    )
    read_timeout: Duration = Field(
        default=timedelta(seconds=10),  # Kestra's default
        alias="readTimeout",
        description="Longest wait for the next bytes of the answer (default PT10S).",
    )
    follow_redirects: bool = Field(default=True, alias="followRedirects")
    allow_failed: bool = Field(
        default=False, alias="allowFailed", description="Succeed on a 4xx or 5xx answer too."
    )
    max_content_length: int = Field(
        default=10 * 1024 * 1024,
        alias="maxContentLength",
        gt=0,
        description="Longest answer body read, in bytes (default 10 MiB).",
    )
    ssl: Ssl = Field(default_factory=Ssl)


class HttpRequestProperties(ConnectorProperties):
    uri: WebUrl = Field(description="The URL, http or https.")
    method: Method = Field(default=Method.GET)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(
        default=None,
        description="Sent as is when text; a mapping or a list is sent as JSON.",
    )
    form_data: dict[str, Any] | None = Field(
        default=None,
        alias="formData",
        description="Sent as a form: url-encoded, or multipart when `contentType` is"
        " multipart/form-data.",
    )
    content_type: str = Field(
        default="application/json",
        alias="contentType",
        description="The body's media type (sent only with a body).",
    )
    options: Options = Field(default_factory=Options)
    ssl_options: Ssl | None = Field(
        default=None, alias="sslOptions", description="Kestra's older spelling of options.ssl."
    )
    allow_failed: bool | None = Field(
        default=None,
        alias="allowFailed",
        description="Kestra's older spelling of options.allowFailed.",
    )

    @model_validator(mode="after")
    def _one_of_each(self) -> HttpRequestProperties:
        if self.body is not None and self.form_data is not None:
            raise ValueError("set `body` or `formData`, not both")
        if self.ssl_options is not None and "ssl" in self.options.model_fields_set:
            raise ValueError("set `options.ssl` or `sslOptions` (its older name), not both")
        return self


class HttpRequestOutputs(BaseModel):
    code: int = Field(description="The answer's status code.")
    headers: dict[str, list[str]] = Field(description="The answer's headers, each a list.")
    body: str | None = Field(description="The answer's body as text (none for HEAD).")
    uri: str = Field(description="The URL that answered, after redirects.")
    length: int = Field(description="The body's size in bytes.")


class HttpRequest:
    """Sends one HTTP request; the answer's status, headers and body are the outputs.

    A 4xx or 5xx answer fails the task with its status and the start of its body, unless
    `options.allowFailed`. Redirects are followed (at most 10). Workers refuse
    addresses their operator denies (`HEADRACE_HTTP_DENY`), after every redirect too.
    """

    Properties = HttpRequestProperties
    Outputs = HttpRequestOutputs
    aliases = ("io.kestra.plugin.core.http.Request", "io.kestra.plugin.fs.http.Request")
    uses_workdir = False

    async def run(self, properties: HttpRequestProperties, context: TaskContext) -> dict[str, Any]:
        method = properties.method.value
        started = time.monotonic()
        outputs = await send_request(properties, NetworkPolicy.from_environment(), context)
        elapsed_ms = (time.monotonic() - started) * 1000
        code = outputs["code"]
        await context.info(
            f"{method} {outputs['uri']} -> {code} ({outputs['length']} bytes, {elapsed_ms:.0f} ms)"
        )
        if code >= 400 and not (properties.options.allow_failed or properties.allow_failed):
            excerpt = (outputs["body"] or "")[:ERROR_BODY_CHARS]
            raise TaskFailed(f"{method} {outputs['uri']} answered {code}: {excerpt}".rstrip(": "))
        return outputs


async def send_request(
    properties: HttpRequestProperties,
    policy: NetworkPolicy,
    context: TaskContext,
    label: str | None = None,
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Any]:
    """Send the request `properties` describe (redirects followed, each checked against
    `policy`); the answer as `http.request`'s outputs, whatever its status. What keeps
    it from an answer fails the task saying what (for other connectors that call APIs).

    `label`: what logs and errors call the URL instead of showing it, for a URL that is a
    secret (a webhook's): masking finds a secret only as written, and a URL may be shown
    re-encoded. `session`: one from `reusable_session(policy)`, whose connections the
    requests of one job share (its polls); by default a session per request.
    """
    method = properties.method.value
    url = label or str(_shown(URL(properties.uri)))
    try:
        return await _send(properties, policy, context, label, session)
    except ValueError as exc:  # yarl's and aiohttp's word for a malformed URL or header
        raise TaskFailed(f"{method} {url}: {exc}") from None
    except aiohttp.ClientConnectorError as exc:
        reason = exc.os_error or exc
        raise TaskFailed(f"could not connect to {exc.host}:{exc.port}: {reason}") from None
    except TimeoutError:
        raise TaskFailed(
            f"{method} {url}: no answer in time (options.connectTimeout, options.readTimeout)"
        ) from None
    except aiohttp.ClientError as exc:
        raise TaskFailed(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None


def reusable_session(policy: NetworkPolicy) -> aiohttp.ClientSession:
    """A session for many requests to one service (a remote job's polls): connections are
    kept and reused, and every address it connects to is checked against `policy`. Its
    owner closes it."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=policy.resolver()))


async def _send(
    properties: HttpRequestProperties,
    policy: NetworkPolicy,
    context: TaskContext,
    label: str | None,
    session: aiohttp.ClientSession | None,
) -> dict[str, Any]:
    """The request sent, redirects followed (each checked against `policy`): the outputs."""
    if session is None:
        connector = aiohttp.TCPConnector(resolver=policy.resolver())
        async with aiohttp.ClientSession(connector=connector) as own:
            return await _exchange(properties, policy, context, label, own)
    return await _exchange(properties, policy, context, label, session)


async def _exchange(
    properties: HttpRequestProperties,
    policy: NetworkPolicy,
    context: TaskContext,
    label: str | None,
    session: aiohttp.ClientSession,
) -> dict[str, Any]:
    options = properties.options
    timeout = aiohttp.ClientTimeout(
        total=None,  # the task's `timeout` bounds the whole attempt
        sock_connect=_seconds(options.connect_timeout),
        sock_read=_seconds(options.read_timeout),
    )
    method, url = properties.method.value, URL(properties.uri)
    headers, with_body = _headers(properties), True
    ssl = _ssl_context(properties)
    for _ in range(MAX_REDIRECTS + 1):
        policy.check_url(url)
        async with session.request(
            method,
            url,
            data=_body(properties) if with_body else None,  # a form is read once: anew
            headers=headers,
            allow_redirects=False,
            timeout=timeout,
            ssl=ssl,
        ) as response:
            location = response.headers.get("Location")
            if options.follow_redirects and response.status in REDIRECTS and location:
                await context.info(
                    f"{method} {label or _shown(url)} -> {response.status}, to {label or location}"
                )
                target = url.join(URL(location))
                if target.scheme not in WEB_SCHEMES:
                    raise TaskFailed(
                        f"{label or _shown(url)} redirects to {label or location}, not a web URL"
                    )
                if target.origin() != url.origin():
                    headers = {k: v for k, v in headers.items() if k.lower() in CROSS_SITE_HEADERS}
                url = target
                # What browsers and curl do: a 303, or a 301/302 after a POST, is a GET.
                if method != "HEAD" and (
                    response.status == 303 or (response.status in (301, 302) and method == "POST")
                ):
                    method, with_body = "GET", False
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                continue
            raw = await _read_body(response, options.max_content_length)
            return {
                "code": response.status,
                "headers": {name: response.headers.getall(name) for name in response.headers},
                "body": None if method == "HEAD" else _text(raw, response.charset),
                "uri": str(_shown(url)),
                "length": len(raw),
            }
    raise TaskFailed(f"more than {MAX_REDIRECTS} redirects, the last to {label or _shown(url)}")


def answer_header(answer: dict[str, Any], name: str) -> list[str]:
    """The values of header `name` (any case) in an answer `send_request` returned."""
    wanted = name.lower()
    return next((v for k, v in answer["headers"].items() if k.lower() == wanted), [])


def _shown(url: URL) -> URL:
    """`url` without a user and password (for logs, errors and outputs)."""
    return url.with_user(None) if url.user or url.password else url


def _text(raw: bytes, charset: str | None) -> str:
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


def _authorization(options: Options) -> str | None:
    """The `Authorization` header the options ask for, if any."""
    auth = options.auth
    if auth is not None and auth.type is AuthType.BEARER:
        return f"Bearer {auth.token}"
    if auth is not None and auth.type is AuthType.BASIC:
        user, password = auth.username or "", auth.password or ""
    elif options.basic_auth_user is not None:
        user, password = options.basic_auth_user, options.basic_auth_password or ""
    else:
        return None
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _headers(properties: HttpRequestProperties) -> dict[str, str]:
    """The request's headers: the task's, its credentials, its body's type."""
    headers = dict(properties.headers)
    authorization = _authorization(properties.options)
    if authorization is not None:
        headers["Authorization"] = authorization
    has_type = any(name.lower() == "content-type" for name in headers)
    if properties.body is not None and not has_type:
        headers["Content-Type"] = properties.content_type
    return headers  # a form's Content-Type is aiohttp's to write (multipart: a boundary)


def _body(properties: HttpRequestProperties) -> Any:
    """What to send: bytes, a form, or nothing."""
    if properties.form_data is not None:
        multipart = properties.content_type.lower().startswith("multipart/form-data")
        form = aiohttp.FormData(default_to_multipart=multipart)
        for name, value in properties.form_data.items():
            form.add_field(name, _form_text(value))
        return form
    if properties.body is None:
        return None
    if isinstance(properties.body, str):
        return properties.body.encode()
    return orjson.dumps(properties.body)


def _form_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _ssl_context(properties: HttpRequestProperties) -> ssl.SSLContext | bool:
    settings = properties.ssl_options or properties.options.ssl  # never both (validated)
    if settings.insecure_trust_all_certificates:
        return False  # aiohttp: no verification
    if settings.ca_certificate:
        try:
            return ssl.create_default_context(cadata=settings.ca_certificate)
        except ssl.SSLError as exc:
            raise TaskFailed(f"options.ssl.caCertificate is not a PEM certificate: {exc}") from None
    return True


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TaskFailed(
                f"the answer's body is over options.maxContentLength ({limit} bytes): raise"
                " it, or fetch large files with a script that writes them somewhere"
            )
        chunks.append(chunk)
    return b"".join(chunks)
