"""How many ExecutionEvent rows per second the indexer writes.

    python benchmarks/indexer.py [--database-url URL] [--events N]

Two measures on a scratch database (created and dropped here):
- `sql`: `write_batch` alone, batches of 2,000 (the consumer's max_poll_records), against
  the same statement as executemany, to justify the unnest choice;
- `end-to-end`: events produced to an embedded broker, the real `run_indexer` consuming
  them, timed until the last row is in PostgreSQL.
Half the events are execution changes, half task-run changes, every execution ends.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from headrace.broker import start_embedded_broker
from headrace.config import Settings
from headrace.db import indexing
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.kafka import make_producer, send
from headrace.messages import (
    AttemptSnapshot,
    ExecutionEvent,
    ExecutionSnapshot,
    StateChange,
    TaskRunSnapshot,
)
from headrace.states import State
from headrace.topics.apply import apply_topics

BATCH = 2_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make_events(count: int) -> list[ExecutionEvent]:
    """Pairs: a task run then its execution, each with a 3-entry history."""
    events = []
    for i in range(count // 2):
        eid = uuid.uuid4().hex
        hist = [
            StateChange(s, T0 + timedelta(seconds=n))
            for n, s in enumerate((State.CREATED, State.RUNNING, State.SUCCESS))
        ]
        run = TaskRunSnapshot(
            f"{eid}-t",
            "task",
            State.SUCCESS,
            hist,
            [AttemptSnapshot(State.SUCCESS, hist[1].date, hist[2].date)],
            {"n": i},
        )
        snap = ExecutionSnapshot("bench", "flow", 1, State.SUCCESS, hist, {"n": i}, {"ok": True})
        events.append(ExecutionEvent(eid, 1, hist[2].date, task_runs=[run]))
        events.append(ExecutionEvent(eid, 2, hist[2].date, execution=snap))
    return events


async def bench_sql(pool: asyncpg.Pool, events: list[ExecutionEvent]) -> float:
    start = time.perf_counter()
    async with pool.acquire() as conn:
        for i in range(0, len(events), BATCH):
            await indexing.write_batch(conn, events[i : i + BATCH], [])
    return len(events) / (time.perf_counter() - start)


async def bench_executemany(pool: asyncpg.Pool, events: list[ExecutionEvent]) -> float:
    """The same upsert, one row per executemany argument tuple (the alternative)."""
    head, _, conflict = indexing._UPSERT_EXECUTIONS.partition("ON CONFLICT")
    columns = head[head.index("(") : head.index(")") + 1]
    sql = (
        f"INSERT INTO executions AS e {columns} VALUES ($1, $2, $3, $4, $5, $6::jsonb,"
        " $7::jsonb, $8::jsonb, $9::jsonb, $10::jsonb, $11, $12, $13, $14, $15) ON CONFLICT"
        + conflict.replace("RETURNING e.id, e.state", "")
    )
    start = time.perf_counter()
    rows = []
    for e in events:
        if e.execution is None:
            continue
        s = e.execution
        rows.append(
            (
                e.execution_id + "-x",  # fresh rows, as for unnest
                s.namespace,
                s.flow_id,
                s.flow_revision,
                str(s.state),
                indexing._histories(s.histories),
                indexing._json(s.inputs),
                indexing._json(s.outputs),
                indexing._json(s.labels),
                indexing._json(s.trigger),
                s.histories[0].date,
                e.time,
                s.histories[0].date,
                e.time,
                e.seq,
            )
        )
    async with pool.acquire() as conn:
        for i in range(0, len(rows), BATCH):
            async with conn.transaction():
                await conn.executemany(sql, rows[i : i + BATCH])
    return len(rows) / (time.perf_counter() - start)


async def bench_end_to_end(database_url: str, events: list[ExecutionEvent]) -> float:
    broker = start_embedded_broker()
    try:
        await apply_topics(broker.bootstrap, 4)
        settings = Settings(
            kafka_bootstrap=broker.bootstrap, database_url=database_url, low_latency=True
        )
        producer = make_producer(settings, "bench")
        await producer.start()
        for event in events:
            await send(producer, "executions", event)
        await producer.flush()
        await producer.stop()
        stop = asyncio.Event()
        pool = await create_pool(database_url)
        counted = "SELECT (SELECT count(*) FROM task_runs) + (SELECT count(*) FROM executions)"
        baseline = await pool.fetchval(counted)
        task = asyncio.create_task(indexer_run(settings, stop))
        # The clock starts at the first row: the consumer group join is not throughput.
        while (already := await pool.fetchval(counted)) == baseline:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        while await pool.fetchval(counted) < baseline + len(events):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        written = baseline + len(events) - already  # rows written while the clock ran
        stop.set()
        await task
        await pool.close()
        return written / elapsed
    finally:
        broker.stop()


async def indexer_run(settings: Settings, stop: asyncio.Event) -> None:
    from headrace.services.indexer import run_indexer

    await run_indexer(settings, stop)


async def main(server_url: str, count: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    name = f"headrace_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{server_url.rpartition('/')[0]}/{name}"
    try:
        pool = await create_pool(url)
        await migrate(pool)
        rate = await bench_sql(pool, make_events(count))
        print(f"write_batch, executions + task runs, batches of {BATCH}: {rate:,.0f} rows/s")
        only = [e for e in make_events(count) if e.execution is not None]
        print(f"write_batch (unnest), executions only: {await bench_sql(pool, only):,.0f} rows/s")
        rate = await bench_executemany(pool, only)
        print(f"executemany, same executions, same batches: {rate:,.0f} rows/s")
        await pool.close()
        e2e = await bench_end_to_end(url, make_events(count))
        print(f"end to end (broker -> run_indexer -> PostgreSQL): {e2e:,.0f} events/s")
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.events))
