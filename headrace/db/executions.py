"""Reading executions and their task runs, in the API's JSON shape (Kestra's).

Rows are written by the indexer (`headrace.db.indexing`); histories and attempts are
stored already in the API shape, so reading is a rename of columns, not a rebuild.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """Which executions a listing shows; every given filter must match."""

    namespace: str | None = None  # this namespace and those below it
    flow_id: str | None = None
    states: Sequence[str] = ()  # any of them
    labels: Mapping[str, str] = field(default_factory=dict)  # each key with its value
    created_from: datetime | None = None  # created at or after
    created_to: datetime | None = None  # created at or before
    q: str | None = None  # an id's start, or in the flow id or namespace, any case
    stuck: bool = False  # only those the watchdog found stuck

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE clause over `executions` and its parameters ($1, $2…).

        Each clause is one the indexes of migrations 0001 and 0009 serve: the
        namespace's subtree as a range (`namespace_clause`), labels by containment
        (GIN, `jsonb_path_ops`)."""
        clauses: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.namespace is not None:
            clauses.append(namespace_clause(arg, self.namespace))
        if self.flow_id is not None:
            clauses.append(f"flow_id = {arg(self.flow_id)}")
        if self.states:
            clauses.append(f"state = ANY({arg(list(self.states))}::text[])")
        if self.labels:
            clauses.append(f"labels @> {arg(dict(self.labels))}::jsonb")
        if self.created_from is not None:
            clauses.append(f"created_at >= {arg(self.created_from)}")
        if self.created_to is not None:
            clauses.append(f"created_at <= {arg(self.created_to)}")
        if self.q:
            clauses.append(q_clause(arg, self.q))
        if self.stuck:
            clauses.append("stuck_reason IS NOT NULL")
        return " AND ".join(clauses) or "TRUE", args


def namespace_clause(arg: Callable[[Any], str], namespace: str) -> str:
    """`namespace` and those below it: in byte order (`COLLATE "C"`, whatever the
    database's collation), every one of them is within [`ns`, `ns/`) (`/` follows `.`),
    a range an index on `namespace COLLATE "C"` serves; the range also holds `ns-x`,
    which the second test leaves out."""
    exact, below, end = arg(namespace), arg(namespace + "."), arg(namespace + "/")
    column = 'namespace COLLATE "C"'
    return (
        f"({column} >= {exact} AND {column} < {end}"
        f" AND (namespace = {exact} OR {column} >= {below}))"
    )


def q_clause(arg: Callable[[Any], str], q: str) -> str:
    """The search box: an execution id that starts with `q`, or a flow id or namespace
    that holds it, in any case. No index serves it (migration 0009 says why): a scan."""
    text = q.lower()
    pattern = arg("%" + re.sub(r"([\\%_])", r"\\\1", text) + "%")
    return (
        f"(starts_with(lower(id), {arg(text)})"
        f" OR lower(flow_id) LIKE {pattern} OR lower(namespace) LIKE {pattern})"
    )


def list_queries(where: ExecutionFilter) -> tuple[str, str, list[Any]]:
    """The count and the page statements of a listing (the page's LIMIT and OFFSET are
    the two parameters after `args`): what `list` runs, and what benchmarks EXPLAIN."""
    clause, args = where.where()
    count_sql = f"SELECT count(*) FROM executions WHERE {clause}"
    page_sql = (
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {clause}"
        f" ORDER BY created_at DESC, id LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
    )
    return count_sql, page_sql, args


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
        *,
        where: ExecutionFilter | None = None,
    ) -> tuple[list[dict], int]:
        """One page of executions, newest first, without their task runs; and the total.
        `stuck`: only those the watchdog found stuck. `where` gives every filter at once
        (the keyword filters are its shorthand and are ignored when it is given)."""
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise ValueError(f"page must be >= 1 and size within 1..{MAX_PAGE_SIZE}")
        if where is None:
            states: tuple[str, ...] = ()
            if state is not None:
                states = (str(state),) if isinstance(state, str) else tuple(map(str, state))
            where = ExecutionFilter(namespace, flow_id, states, stuck=stuck)
        count_sql, page_sql, args = list_queries(where)
        async with self._pool.acquire() as conn:
            total = await conn.fetchval(count_sql, *args)
            rows = await conn.fetch(page_sql, *args, size, (page - 1) * size)
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
