"""A SaaS vendor's JSON API, called through `http.request`'s sending path.

Connectors that drive a vendor's service (`remote_job`'s jobs) call its API through
`VendorApi`, so the workers' network policy (`HEADRACE_HTTP_DENY`) applies and
credentials travel in the `Authorization` header only: never in a URL, a log line or an
error. Every answer is sorted three ways:

- a 2xx answer: its JSON, which `call` requires to be an object (a list, a bare text or
  an empty body there is a proxy's or a login page's answer, not the vendor's: refused
  with `TaskFailed` saying what came);
- a refusal (4xx: a bad token, an unknown id): `TaskFailed` with the vendor's status and
  reason, at once;
- a blip worth asking again (no connection, the connection dropped, no answer in time,
  5xx, 408, 429): `TransientFailure`, a `TaskFailed` that says how long the vendor asked
  to wait (`Retry-After`). Whoever sent a request that is safe to repeat (reading a job's
  state) may catch it and ask again; for anyone else it fails the task like a refusal.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson

from headrace.connectors.base import TaskContext, TaskFailed
from headrace.connectors.http import (
    HttpRequestProperties,
    answer_header,
    reusable_session,
    send_request,
)
from headrace.connectors.network_policy import NetworkPolicy

# 408 Request Timeout, 425 Too Early, 429 Too Many Requests, and every 5xx but 501 Not
# Implemented (which asking again will not change): the vendor may well answer next time.
TRANSIENT_CODES = frozenset({408, 425, 429})
MAX_RETRY_AFTER_S = 60.0  # a longer wait asked for is cut to this
REASON_CHARS = 300  # of a refusal's body, in the task's error
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")


class TransientFailure(TaskFailed):
    """No usable answer this time; asking again later may well get one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the vendor asked to wait, if it said


@dataclass(frozen=True, slots=True)
class Answer:
    code: int
    data: Any  # the body's JSON; None when it is empty or not JSON
    text: str
    retry_after: float | None


@dataclass(slots=True)
class VendorApi:
    """One vendor's API for one attempt: where it is and how to sign in.

    Its requests share their connections (a job polled every second would otherwise
    open a connection, TLS included, each time), until `close`."""

    vendor: str  # as people name it in errors: "Airbyte"
    url: str  # the API's base URL; paths are appended to it
    context: TaskContext
    auth: dict[str, Any] | None = None  # as `http.request`'s `options.auth`
    timeout: timedelta = timedelta(seconds=10)  # to connect, and for the next bytes
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def close(self) -> None:
        """Close the shared connections (the API may still be called: it opens new ones)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The JSON object of a 2xx answer; `TaskFailed` for a refusal or an answer that
        is no JSON object, `TransientFailure` for a blip. `path` may carry a query:
        `/runs?runId=7`."""
        answer = await self.send(method, path, body)
        self.check(answer, method, path)
        return self.json_object(answer, method, path)

    async def send(self, method: str, path: str, body: Any = None) -> Answer:
        """The answer, whatever its status (`TransientFailure` when none came)."""
        request = HttpRequestProperties.model_validate(
            {
                "uri": self.url.rstrip("/") + path,
                "method": method,
                "body": body,
                "headers": {"Accept": "application/json"},
                "options": {
                    "auth": self.auth,
                    "connectTimeout": self.timeout,
                    "readTimeout": self.timeout,
                },
            }
        )
        policy = NetworkPolicy.from_environment()
        if self._session is None or self._session.closed:
            self._session = reusable_session(policy)
        try:
            raw = await send_request(request, policy, self.context, session=self._session)
        except TaskFailed as exc:
            # `send_request` words the failure and raises it `from None`; what it was
            # handling (its `__context__`) tells a blip from a mistake that will recur.
            if _is_transient(exc.__context__):
                raise TransientFailure(str(exc)) from None
            raise
        text = raw["body"] or ""
        try:
            data = orjson.loads(text) if text.strip() else None
        except orjson.JSONDecodeError:
            data = None
        return Answer(raw["code"], data, text, _retry_after(answer_header(raw, "Retry-After")))

    def json_object(self, answer: Answer, method: str, path: str) -> dict[str, Any]:
        """The answer's JSON object; `TaskFailed` saying what came instead."""
        if isinstance(answer.data, dict):
            return answer.data
        if not answer.text.strip():
            came = "an empty body"
        elif answer.data is None:
            came = f"text that is not JSON ({reason(answer)!r})"
        else:
            came = f"JSON that is not an object ({_excerpt(answer.text)!r})"
        raise TaskFailed(
            f"{self.vendor} answered {method} {_path_only(path)} ({answer.code}) with {came},"
            f" not the JSON object its API answers: is `url` {self.vendor}'s API, with no"
            " proxy or login page in the way?"
        )

    def check(self, answer: Answer, method: str, path: str) -> None:
        """Raise for an answer that is not a 2xx: `TransientFailure` or `TaskFailed`."""
        if answer.code < 400:
            return
        if answer.code in TRANSIENT_CODES or (answer.code >= 500 and answer.code != 501):
            raise TransientFailure(
                f"{self.vendor} answered {method} {_path_only(path)} with {answer.code}:"
                f" {reason(answer)}",
                answer.retry_after,
            )
        raise TaskFailed(
            f"{self.vendor} refused {method} {_path_only(path)} ({answer.code}): {reason(answer)}"
        )


def reason(answer: Answer) -> str:
    """What the vendor said was wrong: its JSON `message` (or `error`), with the details
    it gave, or the start of the body as text (an HTML page's title)."""
    data = answer.data
    if isinstance(data, dict):
        message = next(
            (data[key] for key in ("message", "error", "detail") if isinstance(data.get(key), str)),
            "",
        )
        details = data.get("validationErrors") or data.get("details") or data.get("errors")
        if details:
            message = f"{message} {orjson.dumps(details).decode()}".strip()
        if message:
            return message[:REASON_CHARS]
    title = _TITLE.search(answer.text)
    text = title.group(1) if title else _TAG.sub(" ", answer.text)
    return " ".join(text.split())[:REASON_CHARS] or "no reason given"


def _excerpt(text: str) -> str:
    return " ".join(text.split())[:REASON_CHARS]


def _is_transient(cause: BaseException | None) -> bool:
    if isinstance(cause, aiohttp.ClientSSLError):  # a certificate will not fix itself
        return False
    return isinstance(
        cause, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
    )


def _path_only(path: str) -> str:
    return path.split("?", 1)[0]  # a query may carry ids that say nothing to the reader


def _retry_after(values: list[str]) -> float | None:
    """Seconds from a `Retry-After` header (seconds or an HTTP date), capped."""
    if not values:
        return None
    value = values[0].strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None
