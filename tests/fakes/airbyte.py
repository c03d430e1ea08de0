"""A local Airbyte server, answering as Airbyte's Configuration API documents.

Written from Airbyte's Configuration API reference as its published clients carry it
("JobsApi": cancel_job, get_job_info; "ConnectionApi": sync_connection; the models
JobInfoRead, JobRead, AttemptInfoRead, AttemptRead, AttemptStats, AttemptFailureSummary,
AttemptFailureReason, LogRead, NotFoundKnownExceptionInfo, InvalidInputExceptionInfo),
and from the answers Airbyte servers give in its issue tracker:

- every endpoint is a POST of JSON under `/api/v1`;
- `POST /api/v1/connections/sync {"connectionId"}` answers 200 with a JobInfoRead (job
  `pending`, no attempts yet); for a connection that is syncing already, 409
  `{"message": "A sync is already running for: ID", "exceptionClassName":
  "...ValueConflictKnownException"}`; for an unknown connection, 404 with a
  NotFoundKnownExceptionInfo; for a malformed body, 422 with an InvalidInputExceptionInfo;
- `POST /api/v1/jobs/get {"id"}` answers the JobInfoRead: `job.status` goes `pending`,
  `running`, `incomplete` (an attempt failed; Airbyte tries again), `running`… and ends
  `succeeded`, `failed` or `cancelled`; each attempt carries its status,
  `recordsSynced`/`bytesSynced`, `totalStats`, a `failureSummary` when it failed, and its
  log so far: `logs.logLines` (text), or `logs.events` with `logType: structured`;
- `POST /api/v1/jobs/cancel {"id"}` answers the JobInfoRead, the job `cancelled`;
- with basic authentication on, a request without the right credentials gets the
  proxy's 401 page (`401 Authorization Required`, `WWW-Authenticate: Basic`); with a
  token, a wrong bearer gets 401 `{"message": "Unauthorized", ...}`;
- with applications (client id -> secret), `POST /api/v1/applications/token
  {"client_id", "client_secret", "grant-type"}` answers a PublicAccessTokenResponse
  (`access_token`, `token_type: Bearer`, `expires_in` seconds); that token signs
  requests in until it expires (`expire_tokens()` makes the issued ones run out at once);
  unknown credentials get 401 `{"message": "Unauthorized", ...}`.

A job advances one step each time it is read, so tests see it progress over polls
without waiting on a clock. `glitches` makes the next reads fail (a status, or "drop":
the connection is closed without an answer). A slow Airbyte, whose answers come when the
test says (`release()`): `cancel_hangs` holds cancels, `hold_syncs` the answers to syncs
(the job starts at once, as in an Airbyte whose answer is slow to come back),
`hold_reads` the answers to jobs/get.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import Gate

NGINX_401 = (
    "<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    "<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
ERRORS = "io.airbyte.commons.server.errors"


@dataclass
class AttemptPlan:
    """How one attempt of a job goes."""

    lines: list[str]
    outcome: str = "succeeded"  # or "failed"
    failure: str = "Something went wrong in the connector. See the logs for more details."
    origin: str = "source"
    records: int = 0
    size: int = 0
    lines_per_read: int = 2


@dataclass
class ConnectionPlan:
    """How every sync of one connection goes."""

    name: str
    attempts: list[AttemptPlan]
    endless: bool = False  # the last attempt never ends: a slow sync
    structured_logs: bool = False  # logs as `events` (Airbyte 1.x), not `logLines`


@dataclass
class FakeJob:
    id: int
    connection_id: str
    plan: ConnectionPlan
    created_at: int = field(default_factory=lambda: int(time.time()))
    reads: int = 0
    cancelled_at: int | None = None  # the read count when it was cancelled

    def frames(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """The job's states in order: its status, and each attempt's (status, lines)."""
        frames: list[tuple[str, list[tuple[str, int]]]] = [("pending", [])]
        done: list[tuple[str, int]] = []
        for index, attempt in enumerate(self.plan.attempts):
            last = index == len(self.plan.attempts) - 1
            shown = 0
            while True:
                shown = min(shown + attempt.lines_per_read, len(attempt.lines))
                frames.append(("running", [*done, ("running", shown)]))
                if shown == len(attempt.lines):
                    break
            if last and self.plan.endless:
                break
            ended = (attempt.outcome, len(attempt.lines))
            status = "incomplete" if not last else attempt.outcome
            frames.append((status, [*done, ended]))
            done.append(ended)
        return frames

    @property
    def status(self) -> str:
        return self.info()["job"]["status"]

    def info(self) -> dict[str, Any]:
        """The JobInfoRead Airbyte would answer now."""
        frames = self.frames()
        step = self.reads if self.cancelled_at is None else self.cancelled_at
        status, attempts = frames[min(step, len(frames) - 1)]
        extra = max(0, step - (len(frames) - 1)) if self.plan.endless else 0
        if self.cancelled_at is not None:
            status = "cancelled"
            attempts = [(s if s != "running" else "failed", n) for s, n in attempts]
        read = [
            self._attempt(number, attempt_status, shown, extra)
            for number, (attempt_status, shown) in enumerate(attempts)
        ]
        now = int(time.time())
        job = {
            "id": self.id,
            "configType": "sync",
            "configId": self.connection_id,
            "createdAt": self.created_at,
            "updatedAt": now,
            "status": status,
        }
        return {"job": job, "attempts": read}

    def _attempt(self, number: int, status: str, shown: int, extra: int) -> dict[str, Any]:
        plan = self.plan.attempts[number]
        lines = plan.lines[:shown]
        if extra and number == len(self.plan.attempts) - 1:
            lines = lines + [f"replication > still reading records ({k})" for k in range(extra)]
        share = shown / max(len(plan.lines), 1)
        records, size = int(plan.records * share), int(plan.size * share)
        attempt: dict[str, Any] = {
            "id": number,
            "status": status,
            "createdAt": self.created_at,
            "updatedAt": int(time.time()),
            "totalStats": {
                "recordsEmitted": records,
                "bytesEmitted": size,
                "recordsCommitted": records if status == "succeeded" else 0,
            },
        }
        if status != "running":
            attempt["endedAt"] = int(time.time())
        if status == "succeeded":
            attempt |= {"recordsSynced": plan.records, "bytesSynced": plan.size}
        if status == "failed" and self.cancelled_at is None:
            attempt["failureSummary"] = {
                "failures": [
                    {
                        "failureOrigin": plan.origin,
                        "failureType": "system_error",
                        "externalMessage": plan.failure,
                        "internalMessage": f"{plan.origin} process exited with code 1",
                        "retryable": True,
                        "timestamp": int(time.time() * 1000),
                    }
                ],
                "partialSuccess": False,
            }
        if self.plan.structured_logs:
            events = [_event(line) for line in lines]
            return {
                "attempt": attempt,
                "logs": {"events": events, "version": "1"},
                "logType": "structured",
            }
        return {"attempt": attempt, "logs": {"logLines": lines}, "logType": "formatted"}


def _event(line: str) -> dict[str, Any]:
    source, _, message = line.partition(" > ")
    level = "ERROR" if "ERROR" in message else "INFO"
    return {
        "timestamp": int(time.time() * 1000),
        "message": message or source,
        "level": level,
        "logSource": source if message else "platform",
        "caller": {"className": "io.airbyte.workers.general.ReplicationWorker"},
    }


class FakeAirbyte:
    """An Airbyte server's Configuration API, with the connections it was given."""

    def __init__(
        self,
        connections: dict[str, ConnectionPlan] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        applications: dict[str, str] | None = None,
        token_lifetime_s: int = 180,
    ) -> None:
        self.connections = dict(connections or {})
        self.username, self.password, self.token = username, password, token
        self.applications = dict(applications or {})
        self.token_lifetime_s = token_lifetime_s
        self.issued: dict[str, float] = {}  # access token -> when it expires (monotonic)
        self.jobs: dict[int, FakeJob] = {}
        self.syncs: list[str] = []  # connection ids a sync was started for
        self.cancels: list[int] = []  # job ids a cancel was asked for
        self.reads = 0  # jobs/get calls answered
        self.glitches: list[int | str] = []  # the next jobs/get calls fail this way
        self.cancel_hangs = False
        self.hold_syncs = False
        self.hold_reads = False
        self._gate = Gate()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/connections/sync", self.sync)
        app.router.add_post("/api/v1/jobs/get", self.get_job)
        app.router.add_post("/api/v1/jobs/cancel", self.cancel_job)
        app.router.add_post("/api/v1/applications/token", self.new_token)
        return app

    def expire_tokens(self) -> None:
        """Every access token issued so far runs out now."""
        self.issued = dict.fromkeys(self.issued, 0.0)

    async def new_token(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not {"client_id", "client_secret"} <= body.keys():
            return web.json_response(
                {"message": "Invalid input: client_id and client_secret are required"},
                status=400,
            )
        if self.applications.get(body["client_id"]) != body["client_secret"]:
            return _unauthorized(request)
        token = f"eyJ-access-{len(self.issued) + 1}"
        self.issued[token] = time.monotonic() + self.token_lifetime_s
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s}
        )

    def start_job(self, connection_id: str) -> FakeJob:
        """A sync of `connection_id` begins, as Airbyte's scheduler would start one."""
        job = FakeJob(len(self.jobs) + 1, connection_id, self.connections[connection_id])
        self.jobs[job.id] = job
        return job

    def release(self) -> None:
        """Let every held answer go (hanging cancels too; before the server closes)."""
        self._gate.open()

    async def sync(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        body, invalid = await _body(request, "connectionId", str)
        if invalid is not None:
            return invalid
        connection_id = body["connectionId"]
        if connection_id not in self.connections:
            return web.json_response(
                {
                    "id": connection_id,
                    "message": f"Could not find configuration for STANDARD_SYNC: {connection_id}.",
                    "exceptionClassName": f"{ERRORS}.IdNotFoundKnownException",
                },
                status=404,
            )
        if any(
            job.connection_id == connection_id
            and job.status not in ("succeeded", "failed", "cancelled")
            for job in self.jobs.values()
        ):
            return web.json_response(
                {
                    "message": f"A sync is already running for: {connection_id}",
                    "exceptionClassName": f"{ERRORS}.ValueConflictKnownException",
                },
                status=409,
            )
        self.syncs.append(connection_id)
        job = self.start_job(connection_id)
        if self.hold_syncs:
            await self._gate.wait()
        return web.json_response(job.info())

    async def get_job(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        if self.glitches:
            glitch = self.glitches.pop(0)
            if glitch == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            headers = {"Retry-After": "0"} if glitch == 429 else {}
            return web.Response(status=int(glitch), text="upstream connect error", headers=headers)
        job, missing = await self._job(request)
        if job is None:
            return missing
        if self.hold_reads:
            await self._gate.wait()
        self.reads += 1
        answer = job.info()
        job.reads += 1  # the next read sees the next step
        return web.json_response(answer)

    async def cancel_job(self, request: web.Request) -> web.StreamResponse:
        if (refused := self._refusal(request)) is not None:
            return refused
        job, missing = await self._job(request)
        if job is None:
            return missing
        self.cancels.append(job.id)
        if self.cancel_hangs:
            await self._gate.wait()
        if job.status not in ("succeeded", "failed", "cancelled"):
            job.cancelled_at = job.reads
        return web.json_response(job.info())

    async def _job(self, request: web.Request) -> tuple[FakeJob | None, web.StreamResponse]:
        body, invalid = await _body(request, "id", int)
        if invalid is not None:
            return None, invalid
        job = self.jobs.get(body["id"])
        if job is None:
            return None, web.json_response(
                {
                    "id": str(body["id"]),
                    "message": f"Could not find job with id: {body['id']}",
                    "exceptionClassName": f"{ERRORS}.IdNotFoundKnownException",
                },
                status=404,
            )
        return job, web.Response()

    def _refusal(self, request: web.Request) -> web.Response | None:
        if self.username is None and self.token is None and not self.applications:
            return None  # an Airbyte without authentication
        given = request.headers.get("Authorization", "")
        if self.token is not None and given == f"Bearer {self.token}":
            return None
        bearer = given.removeprefix("Bearer ")
        if self.issued.get(bearer, 0.0) > time.monotonic():
            return None
        if self.username is not None:
            basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if given == f"Basic {basic}":
                return None
            if not given.startswith("Bearer "):
                return web.Response(
                    status=401,
                    text=NGINX_401,
                    content_type="text/html",
                    headers={"WWW-Authenticate": 'Basic realm=""'},
                )
        return _unauthorized(request)


def _unauthorized(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "message": "Unauthorized",
            "_links": {"self": {"href": request.path, "templated": False}},
            "_embedded": {"errors": [{"message": "Unauthorized"}]},
        },
        status=401,
    )


async def _body(
    request: web.Request, key: str, kind: type
) -> tuple[dict[str, Any], web.Response | None]:
    """The request's JSON body, or Airbyte's 422 when `key` is missing or not a `kind`."""
    try:
        body = json.loads(await request.text())
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get(key), kind):
        return body, None
    value = body.get(key) if isinstance(body, dict) else None
    return {}, web.json_response(
        {
            "message": "Some properties contained invalid input.",
            "exceptionClassName": f"{ERRORS}.BadObjectSchemaKnownException",
            "validationErrors": [
                {"propertyPath": key, "invalidValue": repr(value), "message": "is required"}
            ],
        },
        status=422,
    )


# Connections a standalone server starts with, for examples and end-to-end tests.
ORDERS = "5b3a0c3e-6c1f-4c7e-9a51-000000000001"
BROKEN = "5b3a0c3e-6c1f-4c7e-9a51-000000000002"
SLOW = "5b3a0c3e-6c1f-4c7e-9a51-000000000003"
FLAKY = "5b3a0c3e-6c1f-4c7e-9a51-000000000004"


def demo_connections() -> dict[str, ConnectionPlan]:
    ok = AttemptPlan(
        [
            "2026-01-05 02:00:01 \x1b[32mINFO\x1b[m platform > Starting replication",
            "2026-01-05 02:00:02 \x1b[32mINFO\x1b[m source > Reading stream orders",
            "2026-01-05 02:00:04 \x1b[32mINFO\x1b[m source > Read 1200 records from orders",
            "2026-01-05 02:00:05 \x1b[32mINFO\x1b[m destination > Committed 1200 records",
            "2026-01-05 02:00:05 \x1b[32mINFO\x1b[m platform > Replication finished",
        ],
        records=1200,
        size=482_000,
    )
    failing = AttemptPlan(
        [
            "2026-01-05 02:00:01 \x1b[32mINFO\x1b[m platform > Starting replication",
            "2026-01-05 02:00:03 \x1b[31mERROR\x1b[m source > Connection refused: db:5432",
        ],
        outcome="failed",
        failure="Checking source connection failed: connection refused",
    )
    return {
        ORDERS: ConnectionPlan("postgres-orders -> warehouse", [ok]),
        BROKEN: ConnectionPlan("crm -> warehouse (its source is down)", [failing]),
        SLOW: ConnectionPlan("events -> warehouse (never ends)", [ok], endless=True),
        FLAKY: ConnectionPlan("billing -> warehouse (one retry)", [failing, ok]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--username", help="turn basic authentication on (with --password)")
    parser.add_argument("--password")
    parser.add_argument("--token", help="accept this bearer token")
    options = parser.parse_args()
    fake = FakeAirbyte(
        demo_connections(),
        username=options.username,
        password=options.password,
        token=options.token,
    )
    for connection_id, plan in fake.connections.items():
        print(f"connection {connection_id}: {plan.name}")
    web.run_app(fake.app(), host=options.host, port=options.port)


if __name__ == "__main__":
    main()
