"""`hightouch.sync` against a local server that answers as Hightouch's REST API documents
(`tests/fakes/hightouch.py` says which routes, run states and error answers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from headrace.messages import LogLevel
from headrace.states import State
from headrace.testing import run_task
from tests.fakes.hightouch import (
    AUDIENCE,
    BROKEN,
    CONTACTS,
    SLOW,
    TOKEN,
    FakeHightouch,
    SyncPlan,
    demo_syncs,
)
from tests.unit.test_flow_loader import errors_of
from tests.unit.waiting import until

INTERRUPTED = 1005
NO_CANCEL = "Hightouch's API cannot cancel a sync run: Hightouch sync run 5001 goes on in Hightouch"


@pytest.fixture
async def hightouch() -> AsyncIterator[tuple[FakeHightouch, str]]:
    syncs = demo_syncs()
    syncs[INTERRUPTED] = SyncPlan("flaky-warehouse", outcome="interrupted")
    fake = FakeHightouch(syncs)
    async with TestServer(fake.app(), host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")
        fake.release()


def sync(url: str, sync_id: int | str, **properties: Any) -> dict[str, Any]:
    return {"url": url, "token": TOKEN, "syncId": sync_id, "pollFrequency": "PT0.01S", **properties}


async def test_a_run_is_followed_with_its_progress_and_rows_passed_on(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    fake, url = hightouch
    run = await run_task(
        "io.kestra.plugin.hightouch.Sync", sync(url, CONTACTS), secrets={"HT": TOKEN}
    )
    assert run.state is State.SUCCESS, run.error
    rows = {"addedCount": 773, "changedCount": 0, "removedCount": 0}
    assert run.outputs == {
        "runId": 5001,
        "status": "success",
        "querySize": 773,
        "plannedRows": rows,
        "successfulRows": rows,
        "failedRows": {"addedCount": 0, "changedCount": 0, "removedCount": 0},
    }
    assert fake.triggers == [(CONTACTS, {"fullResync": False})]
    assert run.messages == [
        "started Hightouch sync run 5001",
        "Hightouch sync run 5001: queued",
        "Hightouch sync run 5001: querying",
        "Hightouch sync run 5001: processing: 0 of 773 planned rows synced, 0 rejected (0%)",
        "Hightouch sync run 5001: processing: 257 of 773 planned rows synced, 0 rejected (33%)",
        "Hightouch sync run 5001: processing: 515 of 773 planned rows synced, 0 rejected (67%)",
        "Hightouch sync run 5001: reporting: 773 of 773 planned rows synced, 0 rejected (100%)",
        "Hightouch sync run 5001: success: 773 of 773 planned rows synced, 0 rejected",
    ]
    full = await run_task("hightouch.sync", sync(url, CONTACTS, fullResynchronization=True))
    assert full.state is State.SUCCESS and full.outputs["runId"] == 5002, full.error
    assert fake.triggers[-1] == (CONTACTS, {"fullResync": True})


async def test_rejected_rows_warn_or_fail_as_asked(hightouch: tuple[FakeHightouch, str]) -> None:
    _, url = hightouch
    run = await run_task("hightouch.sync", sync(url, AUDIENCE))
    assert run.state is State.SUCCESS and run.outputs["status"] == "warning", run.error
    assert run.logs[-1] == (
        LogLevel.WARN,
        "Hightouch sync run 5001: the destination rejected 3 of 200 rows",
    )
    strict = await run_task("hightouch.sync", sync(url, AUDIENCE, failOnWarning=True))
    assert strict.error == (
        "Hightouch sync run 5002 warning: the destination rejected 3 rows (failOnWarning)"
    )


async def test_a_failed_run_fails_the_task_with_hightouchs_error(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    _, url = hightouch
    run = await run_task("hightouch.sync", sync(url, BROKEN))
    assert run.error == (
        "Hightouch sync run 5001 failed: Destination error: the API key of the connected"
        " account is invalid"
    )
    interrupted = await run_task("hightouch.sync", sync(url, INTERRUPTED))
    assert interrupted.error == (
        "Hightouch sync run 5002 interrupted: interrupted; Hightouch resumes it in a new run"
    )


async def test_refusals_fail_at_once_with_hightouchs_answer(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    fake, url = hightouch
    wrong = await run_task("hightouch.sync", sync(url, CONTACTS, token="revoked-key-123"))
    assert wrong.error == (
        f"Hightouch refused POST /api/v1/syncs/{CONTACTS}/trigger (401): Unauthorized"
    )
    unknown = await run_task("hightouch.sync", sync(url, 999))
    assert unknown.error == "Hightouch refused POST /api/v1/syncs/999/trigger (404): Not found"
    assert fake.triggers == [] and fake.reads == 0
    assert all("revoked-key-123" not in message for message in wrong.messages)


async def test_a_run_triggered_while_one_runs_waits_its_turn(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    fake, url = hightouch
    first = await run_task("hightouch.sync", sync(url, CONTACTS, wait=False))
    assert first.outputs == {"runId": 5001}
    assert first.messages == [
        "started Hightouch sync run 5001; not waiting for it to end (wait: false)"
    ]
    assert fake.reads == 0
    second = await run_task("hightouch.sync", sync(url, CONTACTS))
    assert second.state is State.SUCCESS, second.error
    # Queued while the first run worked (its steps advance with every read), then its own.
    assert second.messages[1:3] == [
        "Hightouch sync run 5002: queued",
        "Hightouch sync run 5002: querying",
    ]
    assert fake.reads >= 13 and fake.runs[CONTACTS][0].status == "success"


async def test_blips_while_polling_are_waited_out(hightouch: tuple[FakeHightouch, str]) -> None:
    fake, url = hightouch
    fake.glitches = [500, "drop", "drop"]  # aiohttp sends a dropped GET again once itself
    run = await run_task("hightouch.sync", sync(url, CONTACTS))
    assert run.state is State.SUCCESS, run.error
    warnings = [message for level, message in run.logs if level is LogLevel.WARN]
    assert warnings[0] == (
        "Hightouch answered GET /api/v1/syncs/1001/runs with 500: Internal server error;"
        " asking again in 0.02 s (1 of 5)"
    )
    assert "ServerDisconnectedError" in warnings[1] and len(warnings) == 2


async def test_max_duration_stops_following_a_run_hightouch_cannot_cancel(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    fake, url = hightouch
    fake.hold_reads = True  # the first read is not answered before maxDuration passes
    run = await run_task("hightouch.sync", sync(url, SLOW, maxDuration="PT0.1S"))
    assert run.error == (
        f"Hightouch sync run 5001 was still queued after maxDuration (PT0.1S); {NO_CANCEL}"
    )
    assert run.logs[-1] == (LogLevel.WARN, NO_CANCEL)
    assert fake.unknown == []  # no call that Hightouch does not document was tried


async def test_a_timeout_stops_following_the_run_and_says_it_goes_on(
    hightouch: tuple[FakeHightouch, str],
) -> None:
    fake, url = hightouch
    # However slow the machine, the time is up before the run ends: while the sync is
    # triggered or while its run is followed, and either way the task says so.
    run = await run_task("hightouch.sync", sync(url, SLOW), timeout=timedelta(seconds=0.05))
    assert (run.error or "").startswith("timed out after PT0.05S, the task's `timeout`")
    assert run.messages[-1] == NO_CANCEL
    assert fake.unknown == []


async def test_a_kill_stops_following_the_run_at_once(hightouch: tuple[FakeHightouch, str]) -> None:
    fake, url = hightouch
    task = asyncio.create_task(run_task("hightouch.sync", sync(url, SLOW)))
    await until(lambda: fake.reads >= 2, "two reads of the run")
    killed_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - killed_at < 2.5  # nothing to wait for: no cancel call
    assert fake.unknown == []


async def test_an_answer_that_is_not_hightouchs_fails_the_task_saying_so() -> None:
    @web.middleware
    async def proxy(request: web.Request, handler: Any) -> web.StreamResponse:
        return web.json_response("ok")  # a proxy that answers for Hightouch

    fake = FakeHightouch(demo_syncs())
    app = fake.app()
    app.middlewares.append(proxy)
    async with TestServer(app, host="127.0.0.1") as server:
        run = await run_task("hightouch.sync", sync(str(server.make_url("")), CONTACTS))
    assert run.error == (
        f"Hightouch answered POST /api/v1/syncs/{CONTACTS}/trigger (200) with JSON that is"
        " not an object ('\"ok\"'), not the JSON object its API answers: is `url`"
        " Hightouch's API, with no proxy or login page in the way?"
    )


def test_wrong_properties_are_refused_when_the_flow_is_loaded() -> None:
    def error(task: str) -> str:
        source = f"id: f\nnamespace: n\ntasks:\n  - id: s\n    type: hightouch.sync\n{task}"
        found = errors_of(source)
        assert len(found) == 1, found
        return f"{found[0].path}:{found[0].line}"

    assert error("    token: t\n    syncId: orders\n") == "tasks[0].syncId:7"
    assert error("    syncId: 7\n") == "tasks[0].token:4"  # missing
    assert error("    token: t\n    syncId: 7\n    url: api.hightouch.com\n") == "tasks[0].url:8"
