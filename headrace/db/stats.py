"""The dashboard's numbers, read from the index: executions per state over a window, the
flows that fail most in it, and what is running now.

Every query is served by an index (migrations 0001 and 0009): the window's by the
covering index on `created_at` (state, namespace and flow id included: an index-only
scan), the current counts by the one on `state`. benchmarks/executions_list.py times
them at 100,000 executions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from headrace.states import State

# Bucket widths the dashboard's chart uses, in seconds: the one chosen for a window is
# the widest that still cuts it into at least MIN_BUCKETS (so 24 to ~60 buckets).
BUCKET_SECONDS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)
MIN_BUCKETS = 24
MAX_HOURS = 720  # 30 days
TOP_FAILING = 10

# What "now" counts, by the execution's current state (headrace/states.py).
RUNNING = (State.RUNNING, State.RETRYING, State.KILLING)
QUEUED = (State.CREATED, State.QUEUED)
PAUSED = (State.PAUSED,)


def bucket_seconds(hours: int) -> int:
    """The bucket width for a window of `hours`."""
    window = hours * 3600
    fitting = [s for s in BUCKET_SECONDS if window // s >= MIN_BUCKETS]
    return fitting[-1] if fitting else BUCKET_SECONDS[0]


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end]: whole buckets, aligned on multiples of `bucket` seconds since the
    epoch (the same buckets from one refresh to the next), the last one holding `end`."""

    start: datetime
    end: datetime
    bucket: int

    @classmethod
    def last(cls, hours: int, now: datetime | None = None) -> Window:
        end = now or datetime.now(UTC)
        bucket = bucket_seconds(hours)
        earliest = (end - timedelta(hours=hours)).timestamp()
        start = datetime.fromtimestamp(earliest // bucket * bucket, UTC)
        return cls(start, end, bucket)

    def starts(self) -> list[datetime]:
        """The start of every bucket, oldest first."""
        count = int((self.end - self.start).total_seconds() // self.bucket) + 1
        return [self.start + timedelta(seconds=i * self.bucket) for i in range(count)]


# date_bin (PostgreSQL 14): twice as fast here as arithmetic on the epoch.
_BUCKETS_SQL = """
SELECT date_bin(make_interval(secs => $3), created_at, 'epoch') AS bucket, state,
    count(*) AS n
FROM executions WHERE created_at >= $1 AND created_at <= $2
GROUP BY 1, 2
"""
# The failed executions first (a small partial index), then the total of the top ones.
_FAILING_SQL = f"""
WITH failed AS (
    SELECT namespace, flow_id, count(*) AS failed
    FROM executions WHERE state = 'FAILED' AND created_at >= $1 AND created_at <= $2
    GROUP BY namespace, flow_id
    ORDER BY failed DESC, namespace, flow_id
    LIMIT {TOP_FAILING}
)
SELECT f.namespace, f.flow_id, f.failed,
    (SELECT count(*) FROM executions e
     WHERE e.namespace = f.namespace AND e.flow_id = f.flow_id
       AND e.created_at >= $1 AND e.created_at <= $2) AS total
FROM failed f
ORDER BY f.failed DESC, f.namespace, f.flow_id
"""
_NOW_SQL = (
    "SELECT state, count(*) AS n FROM executions WHERE state = ANY($1::text[]) GROUP BY state"
)
_TASK_RUNS_RUNNING_SQL = "SELECT count(*) FROM task_runs WHERE state = 'RUNNING'"


async def execution_stats(pool: asyncpg.Pool, window: Window) -> dict:
    """`buckets`, `states`, `failuresByFlow` and `now`, as `GET /api/v1/stats` answers."""
    current = [str(s) for s in (*RUNNING, *QUEUED, *PAUSED)]
    async with pool.acquire() as conn:
        counted = await conn.fetch(_BUCKETS_SQL, window.start, window.end, window.bucket)
        failing = await conn.fetch(_FAILING_SQL, window.start, window.end)
        now = {r["state"]: r["n"] for r in await conn.fetch(_NOW_SQL, current)}
        task_runs_running = await conn.fetchval(_TASK_RUNS_RUNNING_SQL)
    by_bucket: dict[datetime, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for row in counted:
        by_bucket.setdefault(row["bucket"], {})[row["state"]] = row["n"]
        totals[row["state"]] = totals.get(row["state"], 0) + row["n"]
    return {
        "buckets": [
            {"start": start, "counts": by_bucket.get(start, {})} for start in window.starts()
        ],
        "states": totals,
        "failuresByFlow": [
            {
                "namespace": r["namespace"],
                "flowId": r["flow_id"],
                "failed": r["failed"],
                "total": r["total"],
            }
            for r in failing
        ],
        "now": {
            "running": sum(now.get(str(s), 0) for s in RUNNING),
            "queued": sum(now.get(str(s), 0) for s in QUEUED),
            "paused": sum(now.get(str(s), 0) for s in PAUSED),
            "taskRunsRunning": task_runs_running,
        },
    }
