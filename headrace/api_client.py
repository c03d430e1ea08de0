"""A small synchronous client of the REST API, for the CLI.

Synchronous on purpose: each CLI command makes one or two calls, and urllib starts
faster than an event loop with an aiohttp session.

It authenticates with `Authorization: Bearer <token>`: the token given, else
`HEADRACE_TOKEN`, else the token file `headrace server local` keeps
(`headrace.token_file`). `headers` may carry other credentials instead (basic auth).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from headrace.errors import HeadraceError
from headrace.token_file import find_token, token_path


class ApiError(HeadraceError):
    """The server answered with an error status; `errors` holds its details."""

    def __init__(self, status: int, message: str, errors: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class Unauthorized(ApiError):
    """401: no token, or one the gateway does not accept; the message says what to do."""


class ServerUnreachable(HeadraceError):
    """No headrace gateway answered at the URL."""


@dataclass
class ApiClient:
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
    ) -> Any:
        url = self.base_url.rstrip("/") + "/api/v1" + path
        if params:
            query = {k: v for k, v in params.items() if v is not None}
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if self.token is None:
            self.token = find_token() or ""
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers |= self.headers
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            error = _api_error(exc)
            raise (self._unauthorized() if error.status == 401 else error) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerUnreachable(
                f"cannot reach headrace at {self.base_url} ({reason}); "
                "is `headrace server local` running? (set --server or HEADRACE_URL)"
            ) from None
        return json.loads(payload) if payload else None

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
        return ApiError(exc.code, f"HTTP {exc.code}: {raw[:200].decode(errors='replace')}")
    return ApiError(exc.code, payload.get("message", f"HTTP {exc.code}"), payload.get("errors"))
