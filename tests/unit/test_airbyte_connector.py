"""`airbyte.sync` against a local server that answers as Airbyte's Configuration API
documents (`tests/fakes/airbyte.py` says which routes, states and error answers)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.connectors.airbyte import AirbyteSync
from headrace.messages import LogLevel
from headrace.states import State
from headrace.testing import run_task
from tests.fakes.airbyte import (
    BROKEN,
    FLAKY,
    ORDERS,
    SLOW,
    AttemptPlan,
    ConnectionPlan,
    FakeAirbyte,
    demo_connections,
)
from tests.unit.test_flow_loader import errors_of
from tests.unit.waiting import until

USER, PASSWORD, TOKEN = "airbyte", "s3cret-airbyte-password", "abt-token-0123456789"
EVENTS = "5b3a0c3e-6c1f-4c7e-9a51-0000000000e5"  # logs as structured events
UNKNOWN = "5b3a0c3e-6c1f-4c7e-9a51-00000000dead"
POLL = "PT0.01S"


class QuickToGiveUp(AirbyteSync):
    """`airbyte.sync` waiting at most 0.2 s for a cancel to be answered (not 5)."""

    cancel_timeout_s: ClassVar[float] = 0.2


@pytest.fixture
async def airbyte() -> AsyncIterator[tuple[FakeAirbyte, str]]:
    connections = demo_connections()
    connections[EVENTS] = ConnectionPlan(
        "events",
        [AttemptPlan(["platform > Starting", "source > ERROR broken row 7"])],
        structured_logs=True,
    )
    fake = FakeAirbyte(connections, username=USER, password=PASSWORD, token=TOKEN)
    async with TestServer(fake.app(), host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")
        fake.release()


def sync(url: str, connection: str, **properties: Any) -> dict[str, Any]:
    return {
        "url": url,
        "connectionId": connection,
        "username": USER,
        "password": PASSWORD,
        "pollFrequency": POLL,
        **properties,
    }


async def test_a_sync_streams_its_log_in_order_once_and_passes_its_stats_on(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    run = await run_task(
        "io.kestra.plugin.airbyte.connections.Sync",
        sync(url, ORDERS),
        secrets={"AIRBYTE_PASSWORD": PASSWORD},
    )
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {
        "jobId": 1,
        "alreadyRunning": False,
        "status": "succeeded",
        "attempts": 1,
        "recordsSynced": 1200,
        "bytesSynced": 482_000,
    }
    assert fake.syncs == [ORDERS] and fake.reads == 5  # pending, running x3, succeeded
    # Each line once, in order, without Airbyte's colours, between the progress lines.
    assert run.messages == [
        "started Airbyte job 1",
        "Airbyte job 1: pending",
        "Airbyte job 1: running",
        "2026-01-05 02:00:01 INFO platform > Starting replication",
        "2026-01-05 02:00:02 INFO source > Reading stream orders",
        "2026-01-05 02:00:04 INFO source > Read 1200 records from orders",
        "2026-01-05 02:00:05 INFO destination > Committed 1200 records",
        "2026-01-05 02:00:05 INFO platform > Replication finished",
        "Airbyte job 1: succeeded: 1200 records (482000 bytes) synced",
    ]


async def test_a_retried_attempt_and_structured_logs_are_streamed_at_their_levels(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    _, url = airbyte
    run = await run_task("airbyte.sync", sync(url, FLAKY))
    assert run.state is State.SUCCESS and run.outputs["attempts"] == 2, run.error
    assert (
        LogLevel.ERROR,
        "2026-01-05 02:00:03 ERROR source > Connection refused: db:5432",
    ) in run.logs
    assert (
        "Airbyte job 1: incomplete: attempt 1 failed (Checking source connection failed:"
        " connection refused (failure origin: source)); Airbyte tries again"
    ) in run.messages
    assert "Airbyte job 1: running (attempt 2)" in run.messages
    assert run.messages.count("2026-01-05 02:00:01 INFO platform > Starting replication") == 2
    events = await run_task(
        "airbyte.sync", sync(url, EVENTS) | {"password": None, "username": None, "token": TOKEN}
    )
    assert events.state is State.SUCCESS, events.error
    assert (LogLevel.INFO, "platform > Starting") in events.logs
    assert (LogLevel.ERROR, "source > ERROR broken row 7") in events.logs


async def test_a_failed_job_fails_the_task_with_airbytes_reason(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    run = await run_task("airbyte.sync", sync(url, BROKEN))
    assert run.state is State.FAILED
    assert run.error == (
        "Airbyte job 1 failed: Checking source connection failed: connection refused"
        " (failure origin: source)"
    )
    assert "2026-01-05 02:00:03 ERROR source > Connection refused: db:5432" in run.messages
    assert fake.cancels == []  # it ended: nothing to cancel


async def test_refusals_fail_at_once_with_airbytes_message(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    wrong = await run_task("airbyte.sync", sync(url, ORDERS, password="nope"))
    assert (
        wrong.error
        == "Airbyte refused POST /api/v1/connections/sync (401): 401 Authorization Required"
    )
    bearer = sync(url, ORDERS) | {"username": None, "password": None, "token": "expired"}
    expired = await run_task("airbyte.sync", bearer, secrets={"AIRBYTE_TOKEN": "expired"})
    assert expired.error == "Airbyte refused POST /api/v1/connections/sync (401): Unauthorized"
    unknown = await run_task("airbyte.sync", sync(url, UNKNOWN))
    assert unknown.error == (
        "Airbyte refused POST /api/v1/connections/sync (404): Could not find configuration"
        f" for STANDARD_SYNC: {UNKNOWN}."
    )
    assert fake.syncs == [] and fake.reads == 0
    assert all(PASSWORD not in message for message in [*wrong.messages, wrong.error or ""])


async def test_a_sync_already_running_fails_or_is_left_alone_as_asked(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    running = fake.start_job(ORDERS)  # Airbyte's scheduler started one
    run = await run_task("airbyte.sync", sync(url, ORDERS))
    assert run.error == (
        f"Airbyte refused to start a sync of connection {ORDERS} (409): A sync is already"
        f" running for: {ORDERS} (with failOnActiveSync: false the task succeeds without"
        " starting one)"
    )
    calm = await run_task("airbyte.sync", sync(url, ORDERS, failOnActiveSync=False))
    assert calm.state is State.SUCCESS, calm.error
    assert calm.outputs == {"jobId": None, "alreadyRunning": True, "status": None}
    assert fake.syncs == [] and fake.jobs == {running.id: running}


async def test_blips_while_polling_are_waited_out_and_a_dead_server_is_given_up_on(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    fake.glitches = [503, "drop", 429]
    run = await run_task("airbyte.sync", sync(url, ORDERS))
    assert run.state is State.SUCCESS, run.error
    warnings = [message for level, message in run.logs if level is LogLevel.WARN]
    assert warnings[0] == (
        "Airbyte answered POST /api/v1/jobs/get with 503: upstream connect error; asking"
        " again in 0.02 s (1 of 5)"
    )
    assert warnings[1].startswith(f"POST {url}/api/v1/jobs/get failed: ServerDisconnectedError")
    assert warnings[1].endswith("asking again in 0.04 s (2 of 5)")
    assert warnings[2].endswith("with 429: upstream connect error; asking again in 0 s (3 of 5)")
    assert len(warnings) == 3 and run.outputs["recordsSynced"] == 1200
    fake.glitches = [502] * 6
    down = await run_task("airbyte.sync", sync(url, ORDERS, pollFrequency="PT0.001S"))
    assert down.error == (
        "could not read the state of Airbyte job 2, 6 times in a row; the last time: Airbyte"
        " answered POST /api/v1/jobs/get with 502: upstream connect error"
    )
    assert fake.cancels == [2]  # not left running unwatched
    assert down.messages[-1] == "cancelled Airbyte job 2"


async def test_wait_false_starts_the_sync_and_returns(airbyte: tuple[FakeAirbyte, str]) -> None:
    fake, url = airbyte
    run = await run_task("airbyte.sync", sync(url, ORDERS, wait=False))
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"jobId": 1, "alreadyRunning": False, "status": "pending"}
    assert run.messages == ["started Airbyte job 1; not waiting for it to end (wait: false)"]
    assert fake.syncs == [ORDERS] and fake.reads == 0 and fake.cancels == []


async def test_max_duration_fails_the_task_and_cancels_the_job(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    fake.hold_reads = True  # the first read is not answered before maxDuration passes
    run = await run_task("airbyte.sync", sync(url, SLOW, maxDuration="PT0.1S"))
    assert run.error == (
        "Airbyte job 1 was still pending after maxDuration (PT0.1S); cancelled Airbyte job 1"
    )
    assert fake.cancels == [1] and fake.jobs[1].status == "cancelled"
    assert run.messages == ["started Airbyte job 1", "cancelled Airbyte job 1"]


async def test_a_kill_cancels_the_job_in_airbyte(airbyte: tuple[FakeAirbyte, str]) -> None:
    fake, url = airbyte
    task = asyncio.create_task(run_task("airbyte.sync", sync(url, SLOW)))
    await until(lambda: fake.reads >= 3, "three reads of the job")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancels == [1] and fake.jobs[1].status == "cancelled"


async def test_a_kill_before_airbyte_answers_the_sync_cancels_the_job_it_started(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    fake.hold_syncs = True
    task = asyncio.create_task(run_task("airbyte.sync", sync(url, SLOW)))
    await until(lambda: fake.syncs, "Airbyte to get the sync")
    task.cancel()  # the sync started in Airbyte; the task does not know its job yet
    fake.release()  # Airbyte's answer comes after the kill
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.cancels == [1] and fake.jobs[1].status == "cancelled"
    assert fake.reads == 0  # the job was not followed: only cancelled


async def test_the_tasks_timeout_cancels_the_job_and_says_so(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    # However slow the machine, the time is up before the job ends: while the sync is
    # started or while it is followed, and either way the job is cancelled.
    run = await run_task("airbyte.sync", sync(url, SLOW), timeout=timedelta(seconds=0.05))
    assert (run.error or "").startswith("timed out after PT0.05S, the task's `timeout`")
    assert run.messages[-1] == "cancelled Airbyte job 1" and fake.cancels == [1]


async def test_a_cancel_airbyte_never_answers_holds_nobody_up(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    fake, url = airbyte
    fake.cancel_hangs = True
    task = asyncio.create_task(run_task(QuickToGiveUp, sync(url, SLOW)))
    await until(lambda: fake.reads >= 2, "two reads of the job")
    killed_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Well under the 5 s a cancel gets by default: the task gave up after 0.2 s.
    assert time.monotonic() - killed_at < 2.5 and fake.cancels == [1]


def test_wrong_properties_are_refused_when_the_flow_is_loaded() -> None:
    def error(task: str) -> tuple[str, int | None, str]:
        source = f"id: f\nnamespace: n\ntasks:\n  - id: s\n    type: airbyte.sync\n{task}"
        found = errors_of(source)
        assert len(found) == 1, found
        return found[0].path, found[0].line, f"{found[0].message} {found[0].hint}"

    base = f"    url: http://airbyte:8000\n    connectionId: {ORDERS}\n"
    path, line, message = error(base + "    pollFrequency: 5s\n")
    assert (path, line) == ("tasks[0].pollFrequency", 8) and "ISO-8601" in message
    not_uuid = error("    url: http://airbyte:8000\n    connectionId: orders\n")
    assert not_uuid[0] == "tasks[0].connectionId"
    assert "must be a connection's UUID, not 'orders'" in not_uuid[2]
    assert "needs both `username` and `password`" in error(base + "    username: me\n")[2]
    assert "not several" in error(base + "    username: a\n    password: b\n    token: c\n")[2]
    application = "    applicationCredentials:\n      clientId: a\n"
    assert "not several" in error(base + application + "      clientSecret: b\n    token: c\n")[2]
    assert error(base + application)[:2] == ("tasks[0].applicationCredentials.clientSecret", 9)
    assert error(base + "    maxDuration: PT0S\n")[:2] == ("tasks[0].maxDuration", 8)


async def test_the_deny_list_applies(
    airbyte: tuple[FakeAirbyte, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = airbyte
    monkeypatch.setenv("HEADRACE_HTTP_DENY", "127.0.0.0/8")
    run = await run_task("airbyte.sync", sync(url, ORDERS))
    assert run.error == "127.0.0.1 is an address the workers may not reach (HEADRACE_HTTP_DENY)"
    assert fake.syncs == []


def _basic() -> str:
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def test_requests_are_the_documented_posts_of_json(
    airbyte: tuple[FakeAirbyte, str],
) -> None:
    seen: list[tuple[str, str, str | None, str | None]] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(
            (
                request.method,
                request.path,
                request.content_type,
                request.headers.get("Authorization"),
            )
        )
        return await handler(request)

    fake = FakeAirbyte(demo_connections(), username=USER, password=PASSWORD)
    app = fake.app()
    app.middlewares.append(record)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/") + "/"  # a trailing slash, as users write it
        run = await run_task("airbyte.sync", sync(url, ORDERS))
    assert run.state is State.SUCCESS, run.error
    assert seen[0] == ("POST", "/api/v1/connections/sync", "application/json", _basic())
    assert {entry[:3] for entry in seen[1:]} == {("POST", "/api/v1/jobs/get", "application/json")}


async def test_an_answer_that_is_not_airbytes_fails_the_task_saying_so() -> None:
    @web.middleware
    async def proxy(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/api/v1/jobs/get":  # a proxy that answers for Airbyte
            return web.json_response([])
        return await handler(request)

    fake = FakeAirbyte(demo_connections(), username=USER, password=PASSWORD)
    app = fake.app()
    app.middlewares.append(proxy)
    async with TestServer(app, host="127.0.0.1") as server:
        # (A timeout, so that reading `[]` as "no news" again would fail, not hang.)
        run = await run_task(
            "airbyte.sync", sync(str(server.make_url("")), ORDERS), timeout=timedelta(seconds=10)
        )
    assert run.error == (
        "Airbyte answered POST /api/v1/jobs/get (200) with JSON that is not an object ('[]'),"
        " not the JSON object its API answers: is `url` Airbyte's API, with no proxy or"
        " login page in the way?"
    )
    assert fake.cancels == [1]  # the job it started is not left running unwatched


CLIENT_ID, CLIENT_SECRET = "a1b2c3d4-client", "abt-client-secret-0123456789"


async def test_application_credentials_get_tokens_and_a_new_one_when_it_runs_out() -> None:
    tokens: list[str | None] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        tokens.append(request.headers.get("Authorization"))
        return await handler(request)

    fake = FakeAirbyte(demo_connections(), applications={CLIENT_ID: CLIENT_SECRET})
    app = fake.app()
    app.middlewares.append(record)
    credentials = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}
    properties = sync("", ORDERS, username=None, password=None)
    properties["applicationCredentials"] = credentials
    async with TestServer(app, host="127.0.0.1") as server:
        properties["url"] = str(server.make_url("")).rstrip("/")
        run = await run_task("airbyte.sync", properties, secrets={"S": CLIENT_SECRET})
        assert run.state is State.SUCCESS, run.error
        assert tokens[0] is None  # the token request carries the credentials in its body
        assert set(tokens[1:]) == {"Bearer eyJ-access-1"}
        # A token that runs out mid-sync: Airbyte answers 401, a new token is fetched and
        # the request sent again; the sync goes on.
        tokens.clear()
        fake.hold_reads = True
        slow = asyncio.create_task(run_task("airbyte.sync", properties))
        await until(lambda: len(tokens) == 3)  # a token, the sync, a read held
        fake.expire_tokens()
        fake.hold_reads = False
        fake.release()
        followed = await slow
    assert followed.state is State.SUCCESS, followed.error
    # The read after the expiry was refused, a new token fetched, the read sent again.
    assert tokens[2:6] == [
        "Bearer eyJ-access-2",
        "Bearer eyJ-access-2",
        None,
        "Bearer eyJ-access-3",
    ]
    assert CLIENT_SECRET not in " ".join([*run.messages, *followed.messages])


async def test_wrong_application_credentials_fail_saying_which_property() -> None:
    fake = FakeAirbyte(demo_connections(), applications={CLIENT_ID: CLIENT_SECRET})
    async with TestServer(fake.app(), host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        properties = sync(url, ORDERS, username=None, password=None)
        properties["applicationCredentials"] = {"clientId": CLIENT_ID, "clientSecret": "nope"}
        run = await run_task("airbyte.sync", properties)
    assert run.error == (
        "Airbyte refused the application credentials (POST /api/v1/applications/token, 401):"
        " Unauthorized: check `applicationCredentials` (User settings > Applications in"
        " Airbyte)"
    )
    assert fake.syncs == []
