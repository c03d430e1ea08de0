"""Reading executions and their task runs, in the API's JSON shape (Kestra's).

Rows are written by the indexer (`headrace.db.indexing`); histories and attempts are
stored already in the API shape, so reading is a rename of columns, not a rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from headrace.states import State

MAX_PAGE_SIZE = 1_000

EXECUTION_COLUMNS = (
    "id, namespace, flow_id, flow_revision, state, histories, inputs, outputs, labels,"
    " trigger, created_at, updated_at, start_date, end_date, stuck_reason, checked_at"
)
_TASK_RUN_COLUMNS = (
    "id, task_id, parent_task_run_id, value, state, histories, attempts, outputs,"
    " start_date, end_date"
)


def execution_json(row: asyncpg.Record, task_runs: Sequence[asyncpg.Record] | None) -> dict:
    """One execution as the API answers it; `taskRunList` left out when `task_runs` is None."""
    body: dict[str, Any] = {
        "id": row["id"],
        "namespace": row["namespace"],
        "flowId": row["flow_id"],
        "flowRevision": row["flow_revision"],
        "labels": row["labels"],
        "inputs": row["inputs"],
        "outputs": row["outputs"],
        "trigger": row["trigger"],
        "state": {
            "current": row["state"],
            "histories": row["histories"],
            "startDate": row["start_date"],
            "endDate": row["end_date"],
        },
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if row["stuck_reason"] is not None:
        # The watchdog found that nothing can move it any more (docs/operations.md).
        body["stuck"] = {"reason": row["stuck_reason"], "checkedAt": row["checked_at"]}
    if task_runs is not None:
        body["taskRunList"] = [task_run_json(r) for r in task_runs]
    return body


def task_run_json(row: asyncpg.Record) -> dict:
    return {
        "id": row["id"],
        "taskId": row["task_id"],
        "parentTaskRunId": row["parent_task_run_id"],
        "value": row["value"],
        "state": {
            "current": row["state"],
            "histories": row["histories"],
            "startDate": row["start_date"],
            "endDate": row["end_date"],
        },
        "attempts": row["attempts"],
        "outputs": row["outputs"],
    }


class ExecutionRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, id: str, runs_after: int | None = None) -> dict | None:
        """The execution with its task runs; with `runs_after`, only the task runs changed
        by events after that seq (what a live follower has not seen)."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1", id
            )
            if row is None:
                return None
            task_runs = await conn.fetch(
                f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE execution_id = $1"
                " AND ($2::bigint IS NULL OR last_seq > $2)"
                " ORDER BY created_at, first_seq, first_index, id",
                id,
                runs_after,
            )
        return execution_json(row, task_runs)

    async def version(self, id: str) -> int:
        """The highest event `seq` the index holds of the execution and its task runs:
        it grows with every change a follower would see (0: nothing indexed)."""
        value = await self._pool.fetchval(
            "SELECT greatest("
            " (SELECT last_seq FROM executions WHERE id = $1),"
            " (SELECT max(last_seq) FROM task_runs WHERE execution_id = $1))",
            id,
        )
        return value or 0

    async def state(self, id: str) -> State | None:
        """The current state alone: what a waiting client polls."""
        value = await self._pool.fetchval("SELECT state FROM executions WHERE id = $1", id)
        return None if value is None else State(value)

    async def list(
        self,
        namespace: str | None = None,
        flow_id: str | None = None,
        state: Sequence[State] | State | None = None,
        page: int = 1,
        size: int = 25,
        stuck: bool = False,
    ) -> tuple[list[dict], int]:
        """One page of executions, newest first, without their task runs; and the total.
        `stuck`: only those the watchdog found stuck."""
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and size within 1..{MAX_PAGE_SIZE}")
        states = None
        if state is not None:
            states = [str(state)] if isinstance(state, str) else [str(s) for s in state]
        where = (
            "($1::text IS NULL OR namespace = $1 OR starts_with(namespace, $1 || '.'))"
            " AND ($2::text IS NULL OR flow_id = $2)"
            " AND ($3::text[] IS NULL OR state = ANY($3))"
        )
        if stuck:
            where += " AND stuck_reason IS NOT NULL"
        async with self._pool.acquire() as conn:
            total = await conn.fetchval(
                f"SELECT count(*) FROM executions WHERE {where}", namespace, flow_id, states
            )
            rows = await conn.fetch(
                f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {where}"
                " ORDER BY created_at DESC, id LIMIT $4 OFFSET $5",
                namespace,
                flow_id,
                states,
                size,
                (page - 1) * size,
            )
        return [execution_json(r, None) for r in rows], total

    async def answer(self, command_id: str) -> dict | None:
        """What the executor did with a kill, resume, restart or replay, once the indexer
        has its answer: {status, reason, state}."""
        row = await self._pool.fetchrow(
            "SELECT status, reason, state FROM execution_commands WHERE id = $1", command_id
        )
        return None if row is None else dict(row)

    async def count_stuck(self) -> int:
        return await self._pool.fetchval(
            "SELECT count(*) FROM executions WHERE stuck_reason IS NOT NULL"
        )
