"""Reading an execution's log lines: a page of them, oldest first, or those after a point."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from headrace.messages import LogLevel

LEVEL_ORDER: tuple[LogLevel, ...] = (
    LogLevel.TRACE,
    LogLevel.DEBUG,
    LogLevel.INFO,
    LogLevel.WARN,
    LogLevel.ERROR,
)
_COLUMNS = (
    "n, id, execution_id, namespace, flow_id, task_run_id, task_id, attempt, time, level, message"
)


def levels_at_least(min_level: LogLevel) -> list[str]:
    return [str(level) for level in LEVEL_ORDER[LEVEL_ORDER.index(min_level) :]]


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which lines of an execution: None leaves a criterion out."""

    min_level: LogLevel | None = None
    task_id: str | None = None
    task_run_id: str | None = None
    attempt: int | None = None
    since: datetime | None = None  # lines at or after
    until: datetime | None = None  # lines before

    def where(self, first_parameter: int, table: str = "") -> tuple[str, list[Any]]:
        """SQL conditions (ANDed, each starting with ` AND`) and their arguments, numbered
        from `$first_parameter`; `table`: the columns' qualifier (`w.`), if any."""
        conditions: list[str] = []
        arguments: list[Any] = []
        for sql, value in (
            ("level = ANY(${})", self.min_level and levels_at_least(self.min_level)),
            ("task_id = ${}", self.task_id),
            ("task_run_id = ${}", self.task_run_id),
            ("attempt = ${}", self.attempt),
            ("time >= ${}", self.since),
            ("time < ${}", self.until),
        ):
            if value is not None:
                arguments.append(value)
                condition = sql.format(first_parameter + len(arguments) - 1)
                conditions.append(f" AND {table}{condition}")
        return "".join(conditions), arguments


def log_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "executionId": row["execution_id"],
        "namespace": row["namespace"],
        "flowId": row["flow_id"],
        "taskRunId": row["task_run_id"],
        "taskId": row["task_id"],
        "attempt": row["attempt"],
        "timestamp": row["time"],
        "level": row["level"],
        "message": row["message"],
    }


class LogRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(
        self,
        execution_id: str,
        min_level: LogLevel | None = None,
        limit: int | None = None,
        offset: int = 0,
        *,
        filter: LogFilter | None = None,
    ) -> list[dict]:
        """Lines matching `filter` (or `min_level`), oldest first; `limit` lines from
        `offset` on."""
        filter = filter or LogFilter(min_level=min_level)
        conditions, arguments = filter.where(4)
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM logs WHERE execution_id = $1{conditions}"
            " ORDER BY time, n LIMIT $2 OFFSET $3",
            execution_id,
            limit,
            offset,
            *arguments,
        )
        return [log_json(row) for row in rows]

    async def after(
        self, execution_id: str, after: int, limit: int, filter: LogFilter | None = None
    ) -> tuple[list[tuple[int, dict]], int, bool]:
        """What a live follower reads next: of the (up to `limit`) lines stored after the
        line numbered `after` (0: from the first), those matching `filter`, in the order
        they were stored, each with its number; the number to read after next time (the
        last line looked at, matching or not: a filter that skips most lines does not
        make the next read scan them again); and whether `limit` lines were looked at
        (more may follow at once)."""
        conditions, arguments = (filter or LogFilter()).where(4, table="w.")
        rows = await self._pool.fetch(
            f"WITH scanned AS (SELECT {_COLUMNS} FROM logs"
            "  WHERE execution_id = $1 AND n > $2 ORDER BY n LIMIT $3)"
            " SELECT w.*, seen.top, seen.count FROM"
            "  (SELECT max(n) AS top, count(*) AS count FROM scanned) AS seen"
            f"  LEFT JOIN scanned AS w ON true{conditions}"
            " ORDER BY w.n",
            execution_id,
            after,
            limit,
            *arguments,
        )
        lines = [(row["n"], log_json(row)) for row in rows if row["n"] is not None]
        top, count = (rows[0]["top"], rows[0]["count"]) if rows else (None, 0)
        return lines, after if top is None else top, count >= limit

    async def exists(self, execution_id: str) -> bool:
        """Whether the execution has any line at all, whatever its level."""
        return await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM logs WHERE execution_id = $1)", execution_id
        )
