"""How fast the web UI's executions list and dashboard answer with 100,000 executions.

    python benchmarks/executions_list.py [--database-url URL] [--executions N] [--repeats R]

On a scratch database of the PostgreSQL server at `--database-url` (created and dropped
here), it seeds N executions (two task runs each) spread over 20 namespaces, 200 flows,
the states, a few labels and 30 days, then times every query the UI makes, through the
gateway's own code (`ExecutionRepository.list`, `headrace.db.stats`): the first page
unfiltered, by namespace, by flow, by state, by label, by date range, by `q`, page 200,
and the dashboard's statistics. Each is run R times: p50 and p95 in ms.

It runs twice in one process: first with the schema up to migration 0008, then with
0009 (the UI's indexes) applied, and prints both with their ratio, what the indexes cost
the indexer's writes (`write_batch` upserts, measured in each phase), how long the
migration took, and an EXPLAIN summary of each query as it runs with the indexes (what
each scan uses). `--keep` keeps the database, to explore it with psql.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from headrace.db.executions import ExecutionFilter, ExecutionRepository, list_queries
from headrace.db.indexing import write_batch
from headrace.db.migrate import bundled_migrations, migrate
from headrace.db.pool import create_pool
from headrace.db.stats import (
    _BUCKETS_SQL,
    _FAILING_SQL,
    _NOW_SQL,
    _TASK_RUNS_RUNNING_SQL,
    PAUSED,
    QUEUED,
    RUNNING,
    Window,
    execution_stats,
)
from headrace.ids import base62
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.states import State

UI_MIGRATION = 9
WRITES = 10_000  # executions the write measure upserts (twice each)
DAYS = 30
TEAMS = ("data", "ml", "ops", "web", "finance")
SUBS = ("", ".etl", ".reports", ".sync")
FLOW_NAMES = (
    "nightly-load",
    "hourly-sync",
    "export-report",
    "refresh-cache",
    "train-model",
    "dbt-run",
    "ingest-events",
    "backup",
    "notify",
    "cleanup",
)
# The share of each state among the executions (the non-ended ones are the recent).
STATES = {
    State.SUCCESS: 0.80,
    State.FAILED: 0.08,
    State.WARNING: 0.03,
    State.KILLED: 0.02,
    State.RUNNING: 0.04,
    State.CREATED: 0.01,
    State.QUEUED: 0.01,
    State.PAUSED: 0.01,
}
EXECUTION_COLUMNS = (
    "id",
    "namespace",
    "flow_id",
    "flow_revision",
    "state",
    "histories",
    "inputs",
    "outputs",
    "labels",
    "trigger",
    "created_at",
    "updated_at",
    "start_date",
    "end_date",
    "last_seq",
)
TASK_RUN_COLUMNS = (
    "id",
    "execution_id",
    "task_id",
    "state",
    "histories",
    "attempts",
    "outputs",
    "created_at",
    "start_date",
    "end_date",
    "first_seq",
    "last_seq",
)


# --------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class Seeded:
    namespaces: list[str]
    flows: list[tuple[str, str]]
    an_id: str
    now: datetime


def _flows(rng: random.Random) -> list[tuple[str, str]]:
    namespaces = [f"company.{team}{sub}" for team in TEAMS for sub in SUBS]
    return [(ns, name) for ns in namespaces for name in FLOW_NAMES]


def _execution(
    rng: random.Random, flows: list[tuple[str, str]], weights: list[float], now: datetime
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    namespace, flow_id = rng.choices(flows, weights)[0]
    state = rng.choices(list(STATES), list(STATES.values()))[0]
    ended = state.is_terminal
    # Unended executions are the recent ones (the last hour); the rest over 30 days.
    age = rng.uniform(0, 3600) if not ended else rng.uniform(0, DAYS * 86400)
    created = now - timedelta(seconds=age)
    end = created + timedelta(seconds=rng.uniform(1, 600)) if ended else None
    history = [{"state": "CREATED", "date": created.isoformat()}]
    if state not in (State.CREATED, State.QUEUED):
        history.append({"state": "RUNNING", "date": created.isoformat()})
    if end is not None:
        history.append({"state": str(state), "date": end.isoformat()})
    team = namespace.split(".")[1]
    labels = {"team": team, "env": rng.choice(("prod", "prod", "staging", "dev"))}
    if rng.random() < 0.1:
        labels["ticket"] = f"JIRA-{rng.randrange(5000)}"
    execution_id = base62(rng.getrandbits(128))
    row = (
        execution_id,
        namespace,
        flow_id,
        1,
        str(state),
        history,
        {"rows": rng.randrange(1000)},
        {"ok": True} if end else {},
        labels,
        {"type": rng.choice(("schedule", "api", "webhook"))},
        created,
        end or created,
        created,
        end,
        3,
    )
    runs = []
    for n, task_id in enumerate(("extract", "load")):
        run_state = str(state) if (n == 1 or ended) else "SUCCESS"
        if not ended and n == 1:
            run_state = "RUNNING" if state == State.RUNNING else "CREATED"
        runs.append(
            (
                base62(rng.getrandbits(128)),
                execution_id,
                task_id,
                run_state,
                history,
                [],
                {},
                created,
                created,
                end,
                n + 1,
                n + 1,
            )
        )
    return row, runs


async def seed(pool: asyncpg.Pool, count: int, rng: random.Random) -> Seeded:
    now = datetime.now(UTC)
    flows = _flows(rng)
    # A few flows run far more often than the rest (schedules every minute), as in life.
    weights = [1 / (1 + i % 37) for i in range(len(flows))]
    rng.shuffle(weights)
    batch = 10_000
    an_id = ""
    async with pool.acquire() as conn:
        for first in range(0, count, batch):
            rows, runs = [], []
            for _ in range(min(batch, count - first)):
                row, task_runs = _execution(rng, flows, weights, now)
                rows.append(row)
                runs.extend(task_runs)
            an_id = an_id or rows[0][0]
            await conn.copy_records_to_table("executions", records=rows, columns=EXECUTION_COLUMNS)
            await conn.copy_records_to_table("task_runs", records=runs, columns=TASK_RUN_COLUMNS)
    return Seeded(sorted({ns for ns, _ in flows}), flows, an_id, now)


async def vacuum(pool: asyncpg.Pool) -> None:
    # As autovacuum leaves a table that stopped changing: statistics and the visibility
    # map (index-only scans need it).
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE executions")
        await conn.execute("VACUUM ANALYZE task_runs")


# --------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Query:
    name: str
    run: Callable[[], Awaitable[Any]]
    # The statements to EXPLAIN, with their arguments.
    statements: list[tuple[str, list[Any]]]


def queries(pool: asyncpg.Pool, seeded: Seeded) -> list[Query]:
    repo = ExecutionRepository(pool)
    now = seeded.now
    day = now - timedelta(days=3)

    def listing(name: str, where: ExecutionFilter, page: int = 1) -> Query:
        count_sql, page_sql, args = list_queries(where)
        return Query(
            name,
            lambda: repo.list(where=where, page=page, size=25),
            [(count_sql, args), (page_sql, [*args, 25, (page - 1) * 25])],
        )

    def stats(hours: int) -> Query:
        window = Window.last(hours, now)
        between = [window.start, window.end]
        current = [str(s) for s in (*RUNNING, *QUEUED, *PAUSED)]
        return Query(
            f"stats, {hours} h",
            lambda: execution_stats(pool, Window.last(hours, now)),
            [
                (_BUCKETS_SQL, [*between, window.bucket]),
                (_FAILING_SQL, between),
                (_NOW_SQL, [current]),
                (_TASK_RUNS_RUNNING_SQL, []),
            ],
        )

    return [
        listing("first page", ExecutionFilter()),
        listing("namespace (a team, 4 namespaces)", ExecutionFilter(namespace="company.data")),
        listing("namespace (a leaf)", ExecutionFilter(namespace="company.ml.etl")),
        listing("flow (namespace and id)", ExecutionFilter("company.ops.sync", "backup")),
        listing("flow id alone", ExecutionFilter(flow_id="train-model")),
        listing("state FAILED", ExecutionFilter(states=("FAILED",))),
        listing("state RUNNING, CREATED", ExecutionFilter(states=("RUNNING", "CREATED"))),
        listing("label team:web", ExecutionFilter(labels={"team": "web"})),
        listing("label ticket:JIRA-42 (rare)", ExecutionFilter(labels={"ticket": "JIRA-42"})),
        listing(
            "date range (one day)",
            ExecutionFilter(created_from=day - timedelta(days=1), created_to=day),
        ),
        listing("q: in 30 flow ids, 5 namespaces", ExecutionFilter(q="Report")),
        listing("q: in 20 flow ids", ExecutionFilter(q="train")),
        listing("q: id prefix", ExecutionFilter(q=seeded.an_id[:8])),
        listing(
            "namespace + state + 7 days",
            ExecutionFilter(
                namespace="company.finance",
                states=("FAILED",),
                created_from=now - timedelta(days=7),
            ),
        ),
        listing("page 200", ExecutionFilter(), page=200),
        stats(24),
        stats(720),
    ]


async def timed(query: Query, repeats: int) -> tuple[float, float]:
    """p50 and p95 in ms, after one untimed run (plans and caches warm)."""
    await query.run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await query.run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]


async def measure(pool: asyncpg.Pool, seeded: Seeded, repeats: int) -> dict[str, tuple]:
    return {q.name: await timed(q, repeats) for q in queries(pool, seeded)}


# --------------------------------------------------------------------------- writes

WRITES_NAMESPACE = "bench.writes"
WRITE_BATCH = 2_000  # the indexer's batches (its consumer's max_poll_records)


def _write_events(count: int, rng: random.Random) -> list[ExecutionEvent]:
    """`count` executions as the indexer sees them: each created, then ended (two upserts)."""
    now = datetime.now(UTC)
    events = []
    for i in range(count):
        execution_id = base62(rng.getrandbits(128))
        labels = {"team": TEAMS[i % len(TEAMS)], "env": "prod"}
        history = [StateChange(State.CREATED, now), StateChange(State.RUNNING, now)]
        for seq, state in ((1, State.RUNNING), (2, State.SUCCESS)):
            if seq == 2:
                history = [*history, StateChange(State.SUCCESS, now)]
            snapshot = ExecutionSnapshot(
                WRITES_NAMESPACE, FLOW_NAMES[i % 10], 1, state, history, {"n": i}, labels=labels
            )
            events.append(ExecutionEvent(execution_id, seq, now, execution=snapshot))
    # Created events first, ended ones after: as a burst reaches the indexer.
    return events[0::2] + events[1::2]


async def indexer_writes(pool: asyncpg.Pool, count: int) -> float:
    """Execution rows the indexer's `write_batch` upserts per second (then removed)."""
    events = _write_events(count, random.Random(9))
    async with pool.acquire() as conn:
        started = time.perf_counter()
        for first in range(0, len(events), WRITE_BATCH):
            await write_batch(conn, events[first : first + WRITE_BATCH], [])
        rate = len(events) / (time.perf_counter() - started)
        await conn.execute("DELETE FROM executions WHERE namespace = $1", WRITES_NAMESPACE)
    await vacuum(pool)
    return rate


# --------------------------------------------------------------------------- EXPLAIN


def _scans(plan: dict) -> list[str]:
    """The scan nodes of a plan, e.g. `Index Only Scan executions_created_covering_idx`."""
    found = []
    node = plan.get("Node Type", "")
    if "Scan" in node:
        index = plan.get("Index Name")
        what = f"{node} {index}" if index else f"{node} {plan.get('Relation Name', '')}"
        found.append(what.strip())
    for child in plan.get("Plans", []):
        found.extend(_scans(child))
    return found


async def explain(pool: asyncpg.Pool, query: Query) -> str:
    parts = []
    async with pool.acquire() as conn:
        for sql, args in query.statements:
            (row,) = await conn.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
            (result,) = row[0]
            scans = ", ".join(dict.fromkeys(_scans(result["Plan"])))
            parts.append(f"{scans} ({result['Execution Time']:.1f} ms)")
    return "; ".join(parts)


# --------------------------------------------------------------------------- main


async def main(server_url: str, count: int, repeats: int, keep: bool) -> None:
    name = f"headrace_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{server_url.rpartition('/')[0]}/{name}"
    try:
        pool = await create_pool(url, max_size=2)
        before = [m for m in bundled_migrations() if m.version < UI_MIGRATION]
        await migrate(pool, before)
        started = time.perf_counter()
        seeded = await seed(pool, count, random.Random(14))
        await vacuum(pool)
        print(
            f"seeded {count:,} executions, {2 * count:,} task runs in "
            f"{time.perf_counter() - started:.1f} s; {repeats} runs of each query"
        )
        without = await measure(pool, seeded, repeats)
        writes_without = await indexer_writes(pool, WRITES)
        started = time.perf_counter()
        await migrate(pool)  # 0009: the UI's indexes
        print(f"migration 0009 on {count:,} executions: {time.perf_counter() - started:.1f} s")
        await vacuum(pool)
        with_indexes = await measure(pool, seeded, repeats)
        writes_with = await indexer_writes(pool, WRITES)
        print(
            f"\n{'query':<36} {'without 0009 p50/p95':>22} {'with 0009 p50/p95':>20} {'p50 ratio':>10}"
        )
        for query, (p50, p95) in with_indexes.items():
            old50, old95 = without[query]
            print(
                f"{query:<36} {old50:>11.1f} /{old95:>7.1f} ms {p50:>9.1f} /{p95:>7.1f} ms"
                f" {old50 / p50:>9.1f}x"
            )
        print(
            f"\nindexer upserts ({WRITES:,} executions created then ended, batches of "
            f"{WRITE_BATCH:,}): {writes_without:,.0f} rows/s without 0009, "
            f"{writes_with:,.0f} with ({writes_with / writes_without:.2f}x)"
        )
        print(
            "\nEXPLAIN ANALYZE with 0009 (lists: count; page. stats: buckets; failures; now; task runs):"
        )
        for query in queries(pool, seeded):
            print(f"  {query.name}: {await explain(pool, query)}")
        await pool.close()
    finally:
        if keep:
            print(f"\nkept: psql {url}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the database, to explore")
    args = parser.parse_args()
    asyncio.run(main(args.database_url, args.executions, args.repeats, args.keep))
