"""`airbyte.sync`: run an Airbyte connection's sync (Kestra's `airbyte.connections.Sync`).

Through Airbyte's Configuration API, as Kestra's plugin does: `POST
/api/v1/connections/sync` starts a job, `POST /api/v1/jobs/get` reads its state and
every attempt's logs, `POST /api/v1/jobs/cancel` stops it. Following, polling and
cancelling are `remote_job`'s.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.http import WebUrl
from headrace.connectors.remote_job import (
    NewLines,
    RemoteJob,
    RemoteJobConnector,
    RemoteJobProperties,
    Snapshot,
)
from headrace.connectors.vendor_api import Answer, VendorApi, reason
from headrace.flow.durations import Duration
from headrace.messages import LogLevel

# A job's statuses: pending, running, incomplete (an attempt failed, Airbyte tries
# again), then one of these.
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Airbyte colours the level and the source
_LEVEL = re.compile(r"\b(ERROR|WARN|WARNING|INFO|DEBUG|TRACE)\b")
LEVEL_WORD_CHARS = 48  # a formatted line's level comes after its date and time
_LEVELS = {
    "ERROR": LogLevel.ERROR,
    "WARN": LogLevel.WARN,
    "WARNING": LogLevel.WARN,
    "INFO": LogLevel.INFO,
    "DEBUG": LogLevel.DEBUG,
    "TRACE": LogLevel.TRACE,
}


# A new access token is fetched this long before the old one runs out: a request sent
# with a token about to expire may reach Airbyte after it did.
TOKEN_MARGIN_S = 30.0
TOKEN_PATH = "/api/v1/applications/token"


class ApplicationCredentials(ConnectorProperties):
    client_id: str = Field(alias="clientId", min_length=1, description="The application's id.")
    client_secret: str = Field(
        alias="clientSecret",
        min_length=1,
        description="Its secret: `{{ secret('AIRBYTE_CLIENT_SECRET') }}`.",
    )


class AirbyteSyncProperties(RemoteJobProperties):
    url: WebUrl = Field(
        description="The Airbyte server's URL, e.g. http://localhost:8000 (its API answers"
        " under /api/v1)."
    )
    connection_id: str = Field(alias="connectionId", description="The connection to sync.")
    username: str | None = Field(
        default=None, description="For basic authentication, with `password`."
    )
    password: str | None = Field(default=None, description="`{{ secret('AIRBYTE_PASSWORD') }}`.")
    token: str | None = Field(
        default=None, description="A bearer token instead: `{{ secret('AIRBYTE_TOKEN') }}`."
    )
    application_credentials: ApplicationCredentials | None = Field(
        default=None,
        alias="applicationCredentials",
        description="An Airbyte application's `clientId` and `clientSecret` (User settings >"
        " Applications; `abctl local credentials` on Airbyte Core): exchanged for access"
        " tokens, renewed as they run out.",
    )
    fail_on_active_sync: bool = Field(
        default=True,
        alias="failOnActiveSync",
        description="Fail when a sync of the connection is already running (the default);"
        " false: succeed without starting one, with `alreadyRunning: true`.",
    )
    http_timeout: Duration = Field(
        default=timedelta(seconds=10),
        alias="httpTimeout",
        gt=timedelta(0),
        description="Longest wait to connect to Airbyte, and for each answer.",
    )

    @field_validator("connection_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError(f"must be a connection's UUID, not {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_way_to_sign_in(self) -> AirbyteSyncProperties:
        if (self.username is None) != (self.password is None):
            raise ValueError("basic authentication needs both `username` and `password`")
        ways = [self.username is not None, self.token is not None]
        ways.append(self.application_credentials is not None)
        if sum(ways) > 1:
            raise ValueError(
                "sign in one way: `username` and `password`, `token`, or"
                " `applicationCredentials`, not several"
            )
        return self


class AirbyteSyncOutputs(BaseModel):
    job_id: int | None = Field(
        default=None, alias="jobId", description="The sync's job (none if not started)."
    )
    already_running: bool = Field(
        default=False,
        alias="alreadyRunning",
        description="A sync was running already, so none was started (failOnActiveSync: false).",
    )
    status: str | None = Field(
        default=None,
        description="The job's last status: succeeded, or pending/running with wait: false.",
    )
    attempts: int | None = Field(default=None, description="How many attempts the job took.")
    records_synced: int | None = Field(
        default=None, alias="recordsSynced", description="Records the last attempt synced."
    )
    bytes_synced: int | None = Field(
        default=None, alias="bytesSynced", description="Bytes the last attempt synced."
    )


class AirbyteSync(RemoteJobConnector):
    """Runs a sync of an Airbyte connection and follows it to its end.

    Streams every attempt's log lines as they appear and fails with Airbyte's reason
    when the job fails. A kill, a timeout or `maxDuration` cancels the job in Airbyte.
    """

    Properties = AirbyteSyncProperties
    Outputs = AirbyteSyncOutputs
    aliases = ("io.kestra.plugin.airbyte.connections.Sync",)

    def job(self, properties: AirbyteSyncProperties, context: TaskContext) -> AirbyteJob:
        return AirbyteJob(properties, context)


class AirbyteJob(RemoteJob):
    vendor = "Airbyte"

    def __init__(self, properties: AirbyteSyncProperties, context: TaskContext) -> None:
        super().__init__()
        self.properties = properties
        self.context = context
        self.api = VendorApi(
            "Airbyte", properties.url, context, _auth(properties), properties.http_timeout
        )
        self.already_running = False
        self._lines = NewLines()
        self._token_expires = 0.0  # monotonic time; with applicationCredentials only

    async def _send(self, method: str, path: str, body: Any) -> Answer:
        """`api.send`, signed in with a fresh access token when the task has application
        credentials (a 401 once gets a new token and the request again)."""
        if self.properties.application_credentials is None:
            return await self.api.send(method, path, body)
        if time.monotonic() >= self._token_expires - TOKEN_MARGIN_S:
            await self._new_token()
        answer = await self.api.send(method, path, body)
        if answer.code == 401:
            await self._new_token()
            answer = await self.api.send(method, path, body)
        return answer

    async def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        answer = await self._send(method, path, body)
        self.api.check(answer, method, path)
        return self.api.json_object(answer, method, path)

    async def _new_token(self) -> None:
        credentials = self.properties.application_credentials
        assert credentials is not None
        self.api.auth = None  # the token request itself carries the credentials
        body = {
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "grant-type": "client_credentials",
        }
        data = await self._token_call(body)
        token, lifetime = data.get("access_token"), data.get("expires_in")
        if not isinstance(token, str) or not token:
            raise TaskFailed(
                f"Airbyte answered POST {TOKEN_PATH} without an access_token: is `url` the"
                " Airbyte server's URL?"
            )
        lifetime = lifetime if isinstance(lifetime, int | float) and lifetime > 0 else 180
        self._token_expires = time.monotonic() + lifetime
        self.api.auth = {"type": "BEARER", "token": token}

    async def _token_call(self, body: dict[str, str]) -> dict[str, Any]:
        answer = await self.api.send("POST", TOKEN_PATH, body)
        if answer.code in (400, 401, 403, 404):
            raise TaskFailed(
                f"Airbyte refused the application credentials (POST {TOKEN_PATH},"
                f" {answer.code}): {reason(answer)}: check `applicationCredentials`"
                " (User settings > Applications in Airbyte)"
            )
        self.api.check(answer, "POST", TOKEN_PATH)
        return self.api.json_object(answer, "POST", TOKEN_PATH)

    async def start(self) -> bool:
        connection = self.properties.connection_id
        path = "/api/v1/connections/sync"
        answer = await self._send("POST", path, {"connectionId": connection})
        if _already_running(answer):
            if self.properties.fail_on_active_sync:
                raise TaskFailed(
                    f"Airbyte refused to start a sync of connection {connection}"
                    f" ({answer.code}): {reason(answer)} (with failOnActiveSync: false the"
                    " task succeeds without starting one)"
                )
            self.already_running = True
            await self.context.info(
                f"a sync of connection {connection} is already running: not starting"
                " another (failOnActiveSync: false)"
            )
            return False
        self.api.check(answer, "POST", path)
        job = _object(self.api.json_object(answer, "POST", path).get("job"))
        if "id" not in job:
            raise TaskFailed(f"Airbyte started no job: its answer has no job id: {answer.text}")
        self.id, self.status = job["id"], job.get("status", "pending")
        return True

    async def check(self) -> Snapshot:
        data = await self._call("POST", "/api/v1/jobs/get", {"id": self.id})
        status = str(_object(data.get("job")).get("status", "unknown"))
        attempts = _attempts(data)
        lines: list[tuple[LogLevel, str]] = []
        for number, info in enumerate(attempts, 1):
            key = _object(info.get("attempt")).get("id", number)
            for line in self._lines.take(key, _log_items(info.get("logs"))):
                lines.append(_log_line(line))
        error = None
        if status == "failed":
            error = _failure(attempts) or "Airbyte gave no reason: see the attempts' logs above"
        elif status == "cancelled":
            error = "cancelled in Airbyte"
        return Snapshot(
            status,
            finished=status in FINAL_STATUSES,
            error=error,
            progress=_progress(status, attempts),
            lines=lines,
            data=data,
        )

    async def close(self) -> None:
        await self.api.close()

    async def cancel(self) -> None:
        path = "/api/v1/jobs/cancel"
        # Its answer (the job, cancelled) says nothing the next read would not.
        self.api.check(await self._send("POST", path, {"id": self.id}), "POST", path)

    def outputs(self, final: Snapshot | None) -> dict[str, Any]:
        outputs: dict[str, Any] = {
            "jobId": self.id,
            "alreadyRunning": self.already_running,
            "status": self.status if self.id is not None else None,
        }
        if final is not None:
            attempts = _attempts(final.data)
            records, size = _synced(attempts)
            outputs |= {"attempts": len(attempts), "recordsSynced": records, "bytesSynced": size}
        return outputs


def _auth(properties: AirbyteSyncProperties) -> dict[str, Any] | None:
    if properties.token is not None:
        return {"type": "BEARER", "token": properties.token}
    if properties.username is not None:
        return {"type": "BASIC", "username": properties.username, "password": properties.password}
    return None


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: a field Airbyte left out or
    gave another shape is read as missing, never as a crash."""
    return value if isinstance(value, dict) else {}


def _attempts(data: dict[str, Any]) -> list[dict[str, Any]]:
    attempts = data.get("attempts")
    return [_object(info) for info in attempts] if isinstance(attempts, list) else []


def _already_running(answer: Answer) -> bool:
    """Airbyte's answer to a sync of a connection that is syncing: 409 with
    `A sync is already running for: ID` (older servers said it with a 500)."""
    return answer.code == 409 or (
        answer.code >= 400 and "already running" in reason(answer).lower()
    )


def _log_items(logs: Any) -> list[Any]:
    """An attempt's log: formatted `logLines` (text), or structured `events`."""
    if not isinstance(logs, dict):
        return []
    return list(logs.get("logLines") or logs.get("events") or [])


def _log_line(item: Any) -> tuple[LogLevel, str]:
    """A log item as a line of ours, at its level."""
    if isinstance(item, dict):  # a structured event
        text = str(item.get("message", ""))
        source = item.get("logSource")
        if source:
            text = f"{source} > {text}"
        return _LEVELS.get(str(item.get("level", "")).upper(), LogLevel.INFO), text
    text = _ANSI.sub("", str(item))
    found = _LEVEL.search(text[:LEVEL_WORD_CHARS])
    return (_LEVELS[found.group(1)] if found else LogLevel.INFO), text


def _failure(attempts: list[Any]) -> str | None:
    """The reason Airbyte gives for the last failed attempt."""
    for info in reversed(attempts):
        summary = _object(_object(info.get("attempt")).get("failureSummary"))
        for failure in map(_object, summary.get("failures") or []):
            message = failure.get("externalMessage") or failure.get("internalMessage")
            if message:
                origin = failure.get("failureOrigin")
                return f"{message} (failure origin: {origin})" if origin else str(message)
    return None


def _progress(status: str, attempts: list[Any]) -> str:
    if status == "succeeded":
        records, size = _synced(attempts)
        if records is not None:
            return f"succeeded: {records} records ({size or 0} bytes) synced"
    if status == "incomplete":
        why = _failure(attempts)
        return f"incomplete: attempt {len(attempts)} failed ({why}); Airbyte tries again"
    return f"{status} (attempt {len(attempts)})" if len(attempts) > 1 else status


def _synced(attempts: list[Any]) -> tuple[int | None, int | None]:
    """Records and bytes the last attempt synced, as Airbyte counts them."""
    if not attempts:
        return None, None
    attempt = _object(attempts[-1].get("attempt"))
    totals = _object(attempt.get("totalStats"))
    records = attempt.get("recordsSynced", totals.get("recordsCommitted"))
    size = attempt.get("bytesSynced", totals.get("bytesCommitted", totals.get("bytesEmitted")))
    return records, size
