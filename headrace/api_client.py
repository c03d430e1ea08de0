"""A small synchronous client of the REST API, for the CLI and for scripts.

Synchronous on purpose: each CLI command makes one or two calls, and urllib starts
faster than an event loop with an aiohttp session.

`ApiClient` has a typed method for every operation of the API (`get_flow`,
`start_execution`, `follow_logs`…: headrace/api.py, one per `operationId` of the OpenAPI
document); `request`, `download`, `upload` and `events` are what they are made of, and
reach any route.

It authenticates with `Authorization: Bearer <token>`: the token given, else
`HEADRACE_TOKEN`, else the token file `headrace server local` keeps
(`headrace.token_file`). `headers` may carry other credentials instead (basic auth).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from headrace.api import API_PREFIX, ApiOperations
from headrace.errors import HeadraceError
from headrace.sse import Event, EventParser
from headrace.token_file import find_token, token_path


class ApiError(HeadraceError):
    """The server answered with an error status; `errors` holds its details, `body` the
    whole JSON answer (None when it was not JSON)."""

    def __init__(
        self, status: int, message: str, errors: list[Any] | None = None, body: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errors = errors or []
        self.body = body


class Unauthorized(ApiError):
    """401: no token, or one the gateway does not accept; the message says what to do."""


class ServerUnreachable(HeadraceError):
    """No headrace gateway answered at the URL."""


@dataclass(frozen=True, slots=True)
class Download:
    """An answer's body being received: `read(n)` gives up to n bytes, b"" at its end."""

    size: int | None  # Content-Length, when the server sent one
    read: Callable[[int], bytes]


@dataclass
class ApiClient(ApiOperations):
    base_url: str
    timeout_s: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)
    # None: found as `find_token` says, at the first request; "" sends none.
    token: str | None = field(default=None, repr=False)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
        prefix: str = API_PREFIX,
    ) -> Any:
        """The JSON answer of `method path` (None when empty); `path` is below `prefix`
        ("" for the server's own routes, `/healthz`)."""
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        with self._open(method, path, params, body, content_type, timeout_s, prefix) as response:
            payload = self._read(response.read)
        return json.loads(payload) if payload else None

    @contextlib.contextmanager
    def download(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
        prefix: str = API_PREFIX,
    ) -> Iterator[Download]:
        """GET `path` as a stream of bytes, never whole in memory: the `Download` reads it
        a chunk at a time. An error status raises as `request` does, before any byte."""
        with self._open("GET", path, params, None, None, timeout_s, prefix) as response:
            length = response.headers.get("Content-Length")
            yield Download(
                size=int(length) if length and length.isdigit() else None,
                read=lambda size: self._read(lambda: response.read(size)),
            )

    def upload(
        self,
        path: str,
        data: IO[bytes],
        *,
        params: dict[str, Any] | None = None,
        content_type: str = "application/octet-stream",
        timeout_s: float | None = None,
    ) -> Any:
        """POST the open binary file `data` as the body, sent a chunk at a time (chunked
        transfer encoding), never whole in memory; the JSON answer, as `request`."""
        with self._open("POST", path, params, data, content_type, timeout_s) as response:
            payload = self._read(response.read)
        return json.loads(payload) if payload else None

    def events(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        resume_tries: int = 5,
        final: str = "end",
    ) -> Iterator[Event]:
        """The Server-Sent Events of `path` (a live stream), as they come, through the
        `final` event. A stream that breaks or closes before it (a gateway restart, a
        proxy's timeout) is opened again, up to `resume_tries` times in a row, from the
        last event's id: no event twice, none lost."""
        last_id: str | None = None
        tries = 0
        while True:
            query = dict(params or {})
            if last_id is not None:
                query["lastEventId"] = last_id
            failure: BaseException
            try:
                # The gateway writes a keep-alive every 15 s: 60 s of silence is a dead link.
                with self._open("GET", path, query, None, None, 60.0) as response:
                    parser = EventParser()
                    while line := response.readline():
                        event = parser.feed(line.decode("utf-8", errors="replace"))
                        if event is not None:
                            tries = 0
                            last_id = event.id or last_id
                            yield event
                            if event.event == final:
                                return
                failure = ConnectionError("the stream closed before its end")
            except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
                failure = exc
            except ServerUnreachable as exc:
                failure = exc
            tries += 1
            if tries > resume_tries:
                raise self._unreachable(failure, "while following its stream")
            time.sleep(min(2.0**tries / 4, 5.0))

    @contextlib.contextmanager
    def _open(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: bytes | IO[bytes] | None,
        content_type: str | None,
        timeout_s: float | None,
        prefix: str = API_PREFIX,
    ) -> Iterator[http.client.HTTPResponse]:
        url = self.base_url.rstrip("/") + prefix + path
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if query:
            # A list value is a repeated parameter (`labels=a:1&labels=b:2`).
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        headers = {"Accept": "application/json"}
        if self.token is None:
            self.token = find_token() or ""
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers |= self.headers
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as exc:
            error = _api_error(exc)
            raise (self._unauthorized() if error.status == 401 else error) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        with response:
            yield response

    def _read(self, read: Callable[[], bytes]) -> bytes:
        """`read()` of the answer's body; a connection that breaks meanwhile is the
        server's going away, said as `ServerUnreachable`."""
        try:
            return read()
        except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
            raise self._unreachable(exc, "while reading its answer") from None

    def _unreachable(self, exc: BaseException, when: str = "") -> ServerUnreachable:
        reason = getattr(exc, "reason", exc)
        return ServerUnreachable(
            f"cannot reach headrace at {self.base_url}{' ' + when if when else ''} ({reason}); "
            "is `headrace server local` running? (set --server or HEADRACE_URL)"
        )

    def _unauthorized(self) -> Unauthorized:
        """What to do, said for a CLI user (the gateway's message is for any client)."""
        local = (
            "a `headrace server local` on this machine prints its token at start and keeps "
            f"it in {token_path()}, which is read when neither is set"
        )
        sent = self.token or any(name.lower() == "authorization" for name in self.headers)
        if not sent:
            return Unauthorized(
                401,
                f"the gateway at {self.base_url} needs a token and none was sent",
                [f"pass --token or set HEADRACE_TOKEN; {local}"],
            )
        return Unauthorized(
            401,
            f"the gateway at {self.base_url} did not accept the credentials sent (401)",
            [f"send the token it was started with (--token or HEADRACE_TOKEN); {local}"],
        )


def _api_error(exc: urllib.error.HTTPError) -> ApiError:
    raw = exc.read()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return ApiError(exc.code, f"HTTP {exc.code}: {raw[:200].decode(errors='replace')}")
    message = payload.get("message")
    problems = payload.get("problems")  # an unhealthy /healthz (a list), /readyz (by check)
    if message is None and problems:
        if isinstance(problems, dict):
            problems = [f"{name}: {problem}" for name, problem in problems.items()]
        message = f"HTTP {exc.code}: " + "; ".join(map(str, problems))
    return ApiError(exc.code, message or f"HTTP {exc.code}", payload.get("errors"), body=payload)
