"""The indexer: topics `executions` and `logs` into PostgreSQL, idempotently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from headrace.config import Settings
from headrace.db.executions import ExecutionRepository
from headrace.db.indexing import (
    CHANGES_CHANNEL,
    MAX_NOTICE_BYTES,
    NOTIFY_CHANNEL,
    id_lists,
    write_batch,
    write_each,
)
from headrace.db.logs import LogRepository
from headrace.kafka import make_producer, send
from headrace.messages import (
    AttemptSnapshot,
    ExecutionEvent,
    ExecutionSnapshot,
    LogLevel,
    LogRecord,
    Message,
    StateChange,
    TaskRunSnapshot,
)
from headrace.services.indexer import run_indexer
from headrace.states import State

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
DEADLINE_S = 20.0


def execution_event(execution_id: str, seq: int, *states: State, **fields: Any) -> ExecutionEvent:
    histories = [StateChange(s, T0 + timedelta(seconds=i)) for i, s in enumerate(states)]
    snapshot = ExecutionSnapshot(
        namespace=fields.get("namespace", "test.indexer"),
        flow_id=fields.get("flow_id", "hello"),
        flow_revision=1,
        state=states[-1],
        histories=histories,
        inputs=fields.get("inputs", {"n": 1}),
        outputs=fields.get("outputs", {}),
        labels={"team": "data"},
        trigger={"type": "api"},
    )
    return ExecutionEvent(execution_id, seq, histories[-1].date, execution=snapshot)


def task_run_event(
    execution_id: str, seq: int, task_run_id: str, *states: State, offset_s: int = 0
) -> ExecutionEvent:
    histories = [StateChange(s, T0 + timedelta(seconds=offset_s + i)) for i, s in enumerate(states)]
    attempts = [AttemptSnapshot(states[-1], histories[0].date, histories[-1].date, None)]
    run = TaskRunSnapshot(
        id=task_run_id,
        task_id=f"task-{task_run_id}",
        state=states[-1],
        histories=histories,
        attempts=attempts,
        outputs={"seq": seq},
    )
    return ExecutionEvent(execution_id, seq, histories[-1].date, task_runs=[run])


def log_record(execution_id: str, n: int, level: LogLevel = LogLevel.INFO) -> LogRecord:
    return LogRecord(
        id=f"{execution_id}-log-{n}",
        execution_id=execution_id,
        namespace="test.indexer",
        flow_id="hello",
        time=T0 + timedelta(milliseconds=n),
        level=level,
        message=f"line {n}",
        task_run_id="tr1",
        task_id="t",
        attempt=1,
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition with a deadline, not a fixed wait


@pytest.fixture(scope="module")
def pool(migrated_pool: asyncpg.Pool) -> asyncpg.Pool:
    return migrated_pool


@pytest.fixture(scope="module")
async def indexer(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(run_indexer(settings, stop, ready=ready.set))
    await asyncio.wait_for(ready.wait(), DEADLINE_S)
    yield task
    stop.set()
    await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def publish(settings: Settings) -> AsyncIterator[Callable[[str, list[Message]], Awaitable]]:
    producer = make_producer(settings, "test-indexer")
    await producer.start()

    async def publish(topic: str, messages: list[Message]) -> None:
        for message in messages:
            await send(producer, topic, message)
        await producer.flush()

    yield publish
    await producer.stop()


def new_id() -> str:
    return uuid.uuid4().hex


async def test_indexes_executions_task_runs_and_logs(
    indexer: asyncio.Task[None], publish: Callable, pool: asyncpg.Pool, database_url: str
) -> None:
    eid = new_id()
    listener = await asyncpg.connect(database_url)
    notified: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(NOTIFY_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    try:
        await publish(
            "executions",
            [
                execution_event(eid, 1, State.CREATED),
                execution_event(eid, 2, State.CREATED, State.RUNNING),
                task_run_event(eid, 3, f"{eid}-a", State.CREATED, State.RUNNING),
                task_run_event(eid, 4, f"{eid}-b", State.CREATED, offset_s=1),
                task_run_event(eid, 5, f"{eid}-a", State.CREATED, State.RUNNING, State.SUCCESS),
                execution_event(eid, 6, State.CREATED, State.RUNNING, State.SUCCESS),
            ],
        )
        await publish(
            "logs",
            [log_record(eid, n, LogLevel.DEBUG if n % 2 else LogLevel.INFO) for n in range(6)],
        )
        executions = ExecutionRepository(pool)

        async def indexed() -> bool:
            got = await executions.get(eid)
            logs = await LogRepository(pool).list(eid)
            return (
                got is not None
                and got["state"]["current"] == "SUCCESS"
                and len(logs) == 6
                and len(got["taskRunList"]) == 2
            )

        await eventually(indexed, "the execution, its task runs and logs")
        execution = await executions.get(eid)
        assert execution is not None
        assert execution["flowId"] == "hello" and execution["inputs"] == {"n": 1}
        assert [h["state"] for h in execution["state"]["histories"]] == [
            "CREATED",
            "RUNNING",
            "SUCCESS",
        ]
        assert execution["state"]["endDate"] == T0 + timedelta(seconds=2)
        runs = execution["taskRunList"]
        assert [r["id"] for r in runs] == [f"{eid}-a", f"{eid}-b"]  # creation order
        assert runs[0]["state"]["current"] == "SUCCESS" and runs[0]["outputs"] == {"seq": 5}
        assert runs[0]["attempts"][0]["state"]["current"] == "SUCCESS"
        info = await LogRepository(pool).list(eid, LogLevel.INFO)
        assert [r["message"] for r in info] == ["line 0", "line 2", "line 4"]
        assert await asyncio.wait_for(notified.get(), DEADLINE_S) == eid
    finally:
        await listener.close()


async def test_replaying_a_batch_adds_no_rows(
    indexer: asyncio.Task[None], publish: Callable, pool: asyncpg.Pool
) -> None:
    eid = new_id()
    batch = [
        execution_event(eid, 1, State.CREATED, State.RUNNING),
        task_run_event(eid, 2, f"{eid}-a", State.CREATED, State.RUNNING),
    ]
    logs = [log_record(eid, n) for n in range(3)]
    marker = new_id()
    for _ in range(2):
        await publish("executions", batch)
        await publish("logs", logs)
    # A final event after both copies: once it is indexed, both copies were processed
    # (one key, one partition, in order).
    await publish("executions", [task_run_event(eid, 3, marker, State.CREATED)])
    await publish("logs", [log_record(eid, 99)])

    async def marker_seen() -> bool:
        runs = await pool.fetchval("SELECT count(*) FROM task_runs WHERE id = $1", marker)
        last_log = await pool.fetchval("SELECT count(*) FROM logs WHERE id = $1", f"{eid}-log-99")
        return runs == 1 and last_log == 1

    await eventually(marker_seen, "the marker rows")
    assert await pool.fetchval("SELECT count(*) FROM executions WHERE id = $1", eid) == 1
    assert await pool.fetchval("SELECT count(*) FROM task_runs WHERE execution_id = $1", eid) == 2
    assert await pool.fetchval("SELECT count(*) FROM logs WHERE execution_id = $1", eid) == 4


async def test_an_older_seq_does_not_overwrite_a_newer_one(
    indexer: asyncio.Task[None], publish: Callable, pool: asyncpg.Pool
) -> None:
    eid = new_id()
    await publish(
        "executions",
        [
            execution_event(eid, 5, State.CREATED, State.RUNNING, State.FAILED),
            task_run_event(eid, 4, f"{eid}-a", State.CREATED, State.RUNNING, State.FAILED),
            # Stale, arriving late (a redelivery from before the newer events).
            execution_event(eid, 2, State.CREATED, State.RUNNING),
            task_run_event(eid, 3, f"{eid}-a", State.CREATED, State.RUNNING),
            task_run_event(eid, 6, f"{eid}-marker", State.CREATED),
        ],
    )

    async def marker_seen() -> bool:
        return (
            await pool.fetchval("SELECT count(*) FROM task_runs WHERE id = $1", f"{eid}-marker")
            == 1
        )

    await eventually(marker_seen, "the marker task run")
    row = await pool.fetchrow("SELECT state, last_seq FROM executions WHERE id = $1", eid)
    assert (row["state"], row["last_seq"]) == ("FAILED", 5)
    run = await pool.fetchrow("SELECT state, last_seq FROM task_runs WHERE id = $1", f"{eid}-a")
    assert (run["state"], run["last_seq"]) == ("FAILED", 4)


async def test_write_batch_keeps_the_highest_seq_per_row(pool: asyncpg.Pool) -> None:
    eid = new_id()
    events = [
        execution_event(eid, 3, State.CREATED, State.RUNNING, State.SUCCESS),
        execution_event(eid, 1, State.CREATED),
        task_run_event(eid, 2, f"{eid}-a", State.CREATED, State.SUCCESS),
        task_run_event(eid, 1, f"{eid}-a", State.CREATED),
    ]
    async with pool.acquire() as conn:
        assert await write_batch(conn, events, [log_record(eid, 1), log_record(eid, 1)]) == [eid]
        # The same batch again changes nothing and announces nothing.
        assert await write_batch(conn, events, [log_record(eid, 1)]) == []
        # An older event alone, in a later batch: the stored row wins.
        stale = [execution_event(eid, 2, State.CREATED, State.RUNNING)]
        assert await write_batch(conn, stale, []) == []
    execution = await ExecutionRepository(pool).get(eid)
    assert execution is not None and execution["state"]["current"] == "SUCCESS"
    assert execution["taskRunList"][0]["state"]["current"] == "SUCCESS"
    assert len(await LogRepository(pool).list(eid)) == 1


async def test_task_runs_one_step_created_are_listed_in_creation_order(
    pool: asyncpg.Pool,
) -> None:
    """A step's task runs share its seq and time: their index in the execution orders
    them, not their ids (hashes), whichever record of the step each came in."""
    eid = new_id()
    at = [StateChange(State.CREATED, T0)]
    ids = [f"{eid}-{name}" for name in ("zz", "aa", "mm", "bb")]
    runs = [
        TaskRunSnapshot(run_id, f"item-{i}", State.CREATED, at, [], index=i + 1)
        for i, run_id in enumerate(ids)
    ]
    first = ExecutionEvent(eid, 1, T0, execution=execution_event(eid, 1, State.RUNNING).execution)
    first.task_runs = runs[:2]
    second = ExecutionEvent(eid, 1, T0, task_runs=runs[2:])  # the same step, split
    later = ExecutionEvent(eid, 2, T0, task_runs=[replace(runs[0], state=State.RUNNING, index=0)])
    async with pool.acquire() as conn:
        await write_batch(conn, [second, first], [])
        await write_batch(conn, [later], [])
    execution = await ExecutionRepository(pool).get(eid)
    assert execution is not None
    assert [run["id"] for run in execution["taskRunList"]] == ids
    assert execution["taskRunList"][0]["state"]["current"] == "RUNNING"


async def test_list_filters_and_pages(pool: asyncpg.Pool) -> None:
    namespace = f"test.list{new_id()[:8]}"
    events = [
        execution_event(
            f"{namespace}-{i}",
            1,
            State.CREATED,
            State.SUCCESS if i % 2 else State.FAILED,
            namespace=namespace,
        )
        for i in range(5)
    ]
    async with pool.acquire() as conn:
        await write_batch(conn, events, [])
    repo = ExecutionRepository(pool)
    items, total = await repo.list(namespace=namespace, state=[State.SUCCESS])
    assert total == 2 and {i["state"]["current"] for i in items} == {"SUCCESS"}
    page2, total = await repo.list(namespace=namespace, flow_id="hello", page=2, size=2)
    assert total == 5 and len(page2) == 2
    assert "taskRunList" not in page2[0]


async def test_ready_is_called_once_migrated_and_consuming(
    indexer: asyncio.Task[None], pool: asyncpg.Pool
) -> None:
    # The fixture awaited `ready`: the indexer runs, and the schema is there.
    assert not indexer.done()
    assert await pool.fetchval("SELECT to_regclass('executions') IS NOT NULL")


def with_nul(text: str) -> str:
    return f"{text}\x00end"


async def test_nul_characters_are_stored_as_replacement_characters(
    indexer: asyncio.Task[None], publish: Callable, pool: asyncpg.Pool
) -> None:
    """PostgreSQL refuses NUL in text and \\u0000 in jsonb: one such event used to stop
    the indexer for good."""
    eid = new_id()
    event = execution_event(
        eid,
        1,
        State.CREATED,
        State.SUCCESS,
        namespace=with_nul("test.nul"),
        inputs={with_nul("key"): [with_nul("value"), "\\u0000 is only mentioned"]},
    )
    run = task_run_event(eid, 2, f"{eid}-a", State.CREATED)
    run.task_runs[0].value = with_nul("item")
    run.task_runs[0].outputs = {"out": with_nul("put")}
    line = log_record(eid, 1)
    line.message = with_nul("message")
    await publish("executions", [event, run])
    await publish("logs", [line])
    executions = ExecutionRepository(pool)

    async def indexed() -> bool:
        assert not indexer.done(), "the indexer stopped"
        got = await executions.get(eid)
        return (
            got is not None
            and len(got["taskRunList"]) == 1
            and await pool.fetchval("SELECT count(*) FROM logs WHERE execution_id = $1", eid) == 1
        )

    await eventually(indexed, "the rows holding NUL characters")
    execution = await executions.get(eid)
    assert execution is not None
    assert execution["namespace"] == "test.nul\ufffdend"
    assert execution["inputs"] == {"key\ufffdend": ["value\ufffdend", "\\u0000 is only mentioned"]}
    [task_run] = execution["taskRunList"]
    assert task_run["value"] == "item\ufffdend" and task_run["outputs"] == {"out": "put\ufffdend"}
    [stored] = await LogRepository(pool).list(eid)
    assert stored["message"] == "message\ufffdend"


def too_big_for_an_index() -> str:
    # Random text does not compress: far above btree's 2704-byte row limit.
    return "".join(uuid.uuid4().hex for _ in range(1_000))


async def test_a_row_postgresql_refuses_is_skipped_and_the_rest_written(
    pool: asyncpg.Pool,
) -> None:
    eid = new_id()
    good = [execution_event(eid, 1, State.CREATED), log_record(eid, 1)]
    bad_event = execution_event(new_id(), 1, State.CREATED, namespace=too_big_for_an_index())
    bad_log = log_record(eid, 2)
    bad_log.id = too_big_for_an_index()
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ProgramLimitExceededError):
            await write_batch(conn, [good[0], bad_event], [good[1], bad_log])
        finished, rejected = await write_each(conn, [good[0], bad_event], [good[1], bad_log])
    assert finished == []
    assert [r.message for r in rejected] == [bad_event, bad_log]
    assert await pool.fetchval("SELECT count(*) FROM executions WHERE id = $1", eid) == 1
    assert [r["message"] for r in await LogRepository(pool).list(eid)] == ["line 1"]


async def test_a_refused_task_run_does_not_take_the_rest_of_its_step_with_it(
    pool: asyncpg.Pool,
) -> None:
    eid = new_id()
    step = execution_event(eid, 1, State.CREATED, State.RUNNING)
    good, bad = (
        task_run_event(eid, 1, run_id, State.CREATED).task_runs[0]
        for run_id in (f"{eid}-good", too_big_for_an_index())
    )
    step.task_runs = [bad, good]
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ProgramLimitExceededError):
            await write_batch(conn, [step], [])
        _, rejected = await write_each(conn, [step], [])
    assert [r.message.task_runs for r in rejected] == [[bad]]
    execution = await ExecutionRepository(pool).get(eid)
    assert execution is not None and execution["state"]["current"] == "RUNNING"
    assert [run["id"] for run in execution["taskRunList"]] == [f"{eid}-good"]


async def test_runs_created_together_keep_their_order_when_a_later_step_shares_the_batch(
    pool: asyncpg.Pool,
) -> None:
    """Only a run's latest event is written, but its place comes from its first."""
    eid = new_id()
    at = [StateChange(State.CREATED, T0)]
    first, second = (
        TaskRunSnapshot(f"{eid}-{name}", name, State.CREATED, at, [], index=i)
        for i, name in enumerate(("zz", "aa"))
    )
    snapshot = execution_event(eid, 1, State.RUNNING).execution
    created = ExecutionEvent(eid, 1, T0, execution=snapshot, task_runs=[first, second])
    later = ExecutionEvent(eid, 2, T0, task_runs=[replace(first, state=State.RUNNING)])
    async with pool.acquire() as conn:
        await write_batch(conn, [created, later], [])
    execution = await ExecutionRepository(pool).get(eid)
    assert execution is not None
    assert [run["taskId"] for run in execution["taskRunList"]] == ["zz", "aa"]
    assert execution["taskRunList"][0]["state"]["current"] == "RUNNING"


async def test_the_indexer_skips_a_refused_row_and_keeps_going(
    indexer: asyncio.Task[None], publish: Callable, pool: asyncpg.Pool, caplog: Any
) -> None:
    eid = new_id()
    bad = log_record(eid, 1)
    bad.id = too_big_for_an_index()
    await publish("logs", [bad, log_record(eid, 2)])
    await publish("executions", [execution_event(eid, 1, State.CREATED)])

    async def good_rows_indexed() -> bool:
        assert not indexer.done(), "the indexer stopped"
        logs = await pool.fetchval("SELECT count(*) FROM logs WHERE execution_id = $1", eid)
        runs = await pool.fetchval("SELECT count(*) FROM executions WHERE id = $1", eid)
        return logs == 1 and runs == 1

    await eventually(good_rows_indexed, "the rows around the refused one")
    assert [r["message"] for r in await LogRepository(pool).list(eid)] == ["line 2"]
    assert any(
        "skipping log line" in r.getMessage() and eid in r.getMessage() for r in caplog.records
    )


def test_change_notices_list_executions_within_the_payload_limit() -> None:
    ids = [uuid.uuid4().hex for _ in range(1_000)]
    lists = id_lists(ids)
    assert len(lists) == 5  # 1,000 ids of 33 bytes with their comma: 5 notices
    assert all(len(payload.encode()) <= MAX_NOTICE_BYTES for payload in lists)
    assert [i for payload in lists for i in payload.split(",")] == ids
    assert id_lists([]) == []


async def test_a_batch_notifies_every_execution_it_changed(
    pool: asyncpg.Pool, database_url: str
) -> None:
    running, logging_only = new_id(), new_id()
    listener = await asyncpg.connect(database_url)
    notices: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CHANGES_CHANNEL, lambda *args: notices.put_nowait(args[3]))
    try:
        async with pool.acquire() as conn:
            await write_batch(
                conn,
                [task_run_event(running, 1, f"{running}-a", State.CREATED, State.RUNNING)],
                [log_record(logging_only, 1)],
            )
        payload = await asyncio.wait_for(notices.get(), DEADLINE_S)
        assert sorted(payload.split(",")) == sorted([running, logging_only])
    finally:
        await listener.close()
