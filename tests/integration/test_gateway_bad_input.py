"""Bad input to the gateway is a 4xx with a clear message, never a 500 or a stall.

Each case a tester once answered with a 500 or a stall (issue #9) is reproduced here
over a real socket, with a real broker and PostgreSQL, then the `wait=true` clients
that go away: their waits must end with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from headrace.broker import start_embedded_broker
from headrace.config import Settings
from headrace.db.executions import ExecutionRepository
from headrace.db.indexing import write_batch
from headrace.db.logs import LogRepository
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.flow.limits import MAX_DEPTH
from headrace.flow_log import FlowLog
from headrace.flow_store import FlowStore
from headrace.kafka import make_producer
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.gateway.app import make_app, make_runner
from headrace.services.gateway.auth import Authenticator
from headrace.services.gateway.browser import HostPolicy
from headrace.services.gateway.context import Gateway
from headrace.services.gateway.credentials import load_credentials
from headrace.services.gateway.flow_loading import FlowLoader
from headrace.services.gateway.waiter import ExecutionWaiter
from headrace.states import State
from headrace.topics.apply import apply_topics

YAML = {"Content-Type": "application/x-yaml"}
DEADLINE_S = 20.0
KEY = "k3y-0123456789abcdef"


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Iterator[Settings]:
    """The session's settings on a broker of this module's own: the backfill test puts
    8,760 starts on `triggers`, which the next module's executor would spend ~30 s on."""
    broker = start_embedded_broker()
    try:
        asyncio.run(apply_topics(broker.bootstrap, settings.partitions))
        yield dataclasses.replace(settings, kafka_bootstrap=broker.bootstrap)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
async def gw(settings: Settings) -> AsyncIterator[Gateway]:
    """The gateway's parts, built as `run_gateway` builds them, kept for inspection."""
    pool = await create_pool(settings.database_url)
    await migrate(pool)
    producer = make_producer(settings, "test-bad-input")
    await producer.start()
    executions = ExecutionRepository(pool)
    waiter = ExecutionWaiter(settings.database_url, executions)
    await waiter.start()
    loader = FlowLoader()
    await loader.start()
    flow_log = FlowLog(settings, "test-bad-input")
    await flow_log.start()
    yield Gateway(
        pool=pool,
        producer=producer,
        flows=FlowStore(flow_log),
        executions=executions,
        logs=LogRepository(pool),
        waiter=waiter,
        flow_log=flow_log,
        producer_started=True,
        flow_loader=loader,
    )
    await flow_log.stop()
    loader.close()
    await waiter.close()
    await producer.stop()
    await pool.close()


@pytest.fixture(scope="module")
async def base_url(gw: Gateway, settings: Settings) -> AsyncIterator[str]:
    # The production runner: aiohttp's TestServer cancels handlers whose client left,
    # which the gateway's server does not.
    authenticator = Authenticator(load_credentials(settings))
    runner = make_runner(make_app(gw, authenticator, HostPolicy.from_settings(settings)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.fixture
async def http(base_url: str, auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as session:
        yield session


@pytest.fixture
def namespace() -> str:
    return f"test.bad{uuid.uuid4().hex[:8]}"


def flow(namespace: str, flow_id: str = "f", extra: str = "") -> str:
    return (
        f"id: {flow_id}\nnamespace: {namespace}\n"
        "tasks:\n  - id: t\n    type: log\n    message: hi\n" + extra
    )


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


async def put(http: aiohttp.ClientSession, namespace: str, source: str, flow_id: str = "f"):
    async with http.put(f"/api/v1/flows/{namespace}/{flow_id}", data=source, headers=YAML) as r:
        return await answer(r)


# ------------------------------------------------------------------ the reported cases


async def test_deeply_nested_yaml_is_422_at_once(http: aiohttp.ClientSession, namespace: str):
    source = flow(namespace, extra="variables:\n  x: " + "[" * 20_000 + "]" * 20_000 + "\n")
    started = time.monotonic()
    status, body = await put(http, namespace, source)
    assert status == 422, body
    assert f"nests deeper than {MAX_DEPTH} levels" in body["errors"][0]["message"]
    assert body["errors"][0]["line"] == 8
    assert time.monotonic() - started < 5  # a RecursionError after 4 s of CPU, before


async def test_a_6000_task_flow_is_accepted(http: aiohttp.ClientSession, namespace: str):
    tasks = "".join(f"  - {{id: t{i}, type: log, message: hi}}\n" for i in range(6_000))
    status, body = await put(http, namespace, f"id: f\nnamespace: {namespace}\ntasks:\n{tasks}")
    assert status == 201, body
    assert len(body["tasks"]) == 6_000


async def test_a_huge_max_attempts_is_422_and_nothing_is_saved(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    retry = "    retry: {type: constant, interval: PT1S, maxAttempts: 99999999999999999999999}\n"
    status, body = await put(http, namespace, flow(namespace, extra=retry))
    assert status == 422
    assert "beyond 64 bits" in body["errors"][0]["message"]
    async with http.get(f"/api/v1/flows/{namespace}/f") as response:
        assert response.status == 404


async def test_a_flow_stored_before_the_limits_stays_readable(
    http: aiohttp.ClientSession, gw: Gateway, namespace: str
) -> None:
    # Saved without the API's checks, as an older gateway would have accepted it.
    old = flow(namespace, extra="    timeout: P5000D\n") + (
        f"triggers:\n  - id: hook\n    type: webhook\n    key: {KEY}\n"
    )
    await gw.flows.save(namespace, "f", old)
    async with http.get(f"/api/v1/flows/{namespace}/f") as response:
        status, body = await answer(response)
        assert status == 200 and body["source"] == old and "tasks" not in body
    async with http.post(f"/api/v1/executions/{namespace}/f", json={}) as response:
        status, body = await answer(response)
        assert status == 422 and body["message"] == "the stored flow no longer validates"
        assert "366 days" in body["errors"][0]["message"]
    async with http.post(f"/api/v1/executions/webhook/{namespace}/f/{KEY}") as response:
        assert (await answer(response))[0] == 404
    async with http.get("/api/v1/triggers", params={"namespace": namespace}) as response:
        assert await answer(response) == (200, {"results": [], "total": 0})


@pytest.mark.parametrize(
    ("start", "says"),
    [
        ("0001-01-01T00:00:00", "must be after 1970"),
        ("0001-01-01T00:00:00+05:00", "must be after 1970"),
        ("1969-12-31T23:59:59Z", "must be after 1970"),
        ("99999-01-01", "not an ISO-8601 date-time"),
    ],
)
async def test_backfill_dates_out_of_range_are_400(
    http: aiohttp.ClientSession, namespace: str, start: str, says: str
) -> None:
    schedule = "triggers:\n  - id: tick\n    type: schedule\n    cron: '0 0 * * *'\n"
    assert (await put(http, namespace, flow(namespace, extra=schedule)))[0] == 201
    url = f"/api/v1/triggers/{namespace}/f/tick/backfill"
    async with http.post(url, json={"start": start, "end": "2024-01-02T00:00:00Z"}) as response:
        status, body = await answer(response)
        assert status == 400 and says in body["message"], body


@pytest.mark.parametrize(
    ("timeout", "says"),
    [
        ("nan", "positive number"),
        ("inf", "positive number"),
        ("-inf", "positive number"),
        ("0", "positive number"),
        ("-3", "positive number"),
        ("86401", "at most 86400 seconds"),
        ("P2D", "at most 86400 seconds"),
        ("P99999999999D", "not a duration"),
        ("1e999", "positive number"),
        ("soon", "not a duration"),
    ],
)
async def test_wait_timeouts_must_be_finite_positive_and_capped(
    http: aiohttp.ClientSession, namespace: str, timeout: str, says: str
) -> None:
    hook = f"triggers:\n  - id: hook\n    type: webhook\n    key: {KEY}\n"
    assert (await put(http, namespace, flow(namespace, extra=hook)))[0] == 201
    params = {"wait": "true", "timeout": timeout}
    for url in (
        f"/api/v1/executions/{namespace}/f",
        f"/api/v1/executions/webhook/{namespace}/f/{KEY}",
    ):
        async with http.post(url, params=params, json={}) as response:
            status, body = await answer(response)
            assert status == 400 and says in body["message"], (url, body)
            assert "'timeout'" in body["message"]


# ---------------------------------------------------------- clients that go away


async def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("via", ["start", "webhook"])
async def test_a_client_that_leaves_ends_its_wait_and_its_polling(
    base_url: str,
    gw: Gateway,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    via: str,
    auth_headers: dict[str, str],
) -> None:
    from headrace.services.gateway import waiter as waiter_module

    # Poll as often as without LISTEN: the polling that must stop is then easy to see.
    monkeypatch.setattr(waiter_module, "LISTENING_POLL_S", waiter_module.POLL_INTERVAL_S)
    # Count the waits' reads of their row: the real query still runs. Counting them,
    # rather than the database's commits, leaves out whatever else writes meanwhile.
    reads = 0
    read_state = ExecutionRepository.state

    async def counted_state(self: ExecutionRepository, id: str) -> State | None:
        nonlocal reads
        reads += 1
        return await read_state(self, id)

    monkeypatch.setattr(ExecutionRepository, "state", counted_state)
    hook = f"triggers:\n  - id: hook\n    type: webhook\n    key: {KEY}\n"
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as setup:
        assert (await put(setup, namespace, flow(namespace, extra=hook)))[0] == 201
    url = (
        f"/api/v1/executions/{namespace}/f"
        if via == "start"
        else f"/api/v1/executions/webhook/{namespace}/f/{KEY}"
    )
    clients = 20
    before = gw.waiter.waiting
    # Real clients on their own connections: nothing runs the flow, so they would wait
    # for the whole hour asked for.
    session = aiohttp.ClientSession(base_url, headers=auth_headers)

    async def ask() -> int:
        async with session.post(url, params={"wait": "true", "timeout": "3600"}, json={}) as r:
            return r.status

    requests = [asyncio.create_task(ask()) for _ in range(clients)]
    await wait_for(lambda: gw.waiter.waiting == before + clients, "the waits to start")
    # Each wait reads its row on start, then once a poll: they poll while they wait.
    await wait_for(lambda: reads >= 3 * clients, "the waits to poll")

    for request in requests:  # the clients go away
        request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*requests)
    await session.close()
    await wait_for(lambda: gw.waiter.waiting == before, "the waits to end with their clients")

    polled = reads
    await asyncio.sleep(3 * waiter_module.POLL_INTERVAL_S)  # three polls, had they gone on
    assert reads == polled, f"{reads - polled} reads after the clients left"


async def test_a_wait_still_answers_its_connected_client(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    assert (await put(http, namespace, flow(namespace)))[0] == 201
    url = f"/api/v1/executions/{namespace}/f"
    async with http.post(url, params={"wait": "true", "timeout": "0.5"}, json={}) as response:
        status, body = await answer(response)
        assert status == 504 and "did not end within 0.5 s" in body["message"]


async def listen_backends(pool: asyncpg.Pool) -> set[int]:
    rows = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )
    return {row["pid"] for row in rows}


async def test_the_listen_connection_comes_back_and_wakes_waiters(
    gw: Gateway, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headrace.services.gateway import waiter as waiter_module

    killed = await listen_backends(gw.pool)
    assert killed and gw.waiter.listening
    # Cut it from the server side, as a PostgreSQL restart or a proxy would.
    await gw.pool.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", killed)
    deadline = time.monotonic() + DEADLINE_S
    while not (await listen_backends(gw.pool)) - killed:
        assert time.monotonic() < deadline, "no new LISTEN connection"
        await asyncio.sleep(0.05)

    # Only a notification can end this wait in time: the poll is an hour apart.
    monkeypatch.setattr(waiter_module, "LISTENING_POLL_S", 3600.0)
    execution_id = uuid.uuid4().hex
    waiting = asyncio.create_task(gw.waiter.wait_for_end(execution_id, 3600))
    await wait_for(lambda: gw.waiter.waiting >= 1, "the wait to start")
    await asyncio.sleep(0.2)  # let its first read find nothing
    now = datetime.now(UTC)
    snapshot = ExecutionSnapshot(
        namespace=namespace,
        flow_id="f",
        flow_revision=1,
        state=State.SUCCESS,
        histories=[StateChange(State.CREATED, now), StateChange(State.SUCCESS, now)],
        inputs={},
    )
    async with gw.pool.acquire() as conn:
        await write_batch(conn, [ExecutionEvent(execution_id, 1, now, execution=snapshot)], [])
    execution = await asyncio.wait_for(waiting, DEADLINE_S)
    assert execution is not None and execution["state"]["current"] == "SUCCESS"


async def test_a_big_backfill_does_not_stall_the_gateway(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    hourly = "triggers:\n  - id: tick\n    type: schedule\n    cron: '0 * * * *'\n"
    assert (await put(http, namespace, flow(namespace, extra=hourly)))[0] == 201
    url = f"/api/v1/triggers/{namespace}/f/tick/backfill"
    body = {"start": "2023-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}  # 8,760 ticks
    # The test process holds the whole suite's objects, and a full collection over them
    # (>100 ms on a slow machine) is not the gateway's doing: set them aside, as they
    # would not exist in a gateway process. The gateway's own garbage is still collected.
    gc.freeze()
    try:
        backfill = asyncio.create_task(http.post(url, json=body))
        worst = 0.0
        while not backfill.done():
            started = time.monotonic()
            async with http.get("/healthz") as response:
                assert response.status == 200
            worst = max(worst, time.monotonic() - started)
            await asyncio.sleep(0.02)
    finally:
        gc.unfreeze()
    async with await backfill as response:
        status, answer_body = await answer(response)
        assert status == 200 and answer_body["count"] == 8_760, answer_body
    # Building the events on the event loop held it for ~5 s; now only publishing does.
    assert worst < 0.25, worst
