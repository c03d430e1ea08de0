"""Reading an execution's log lines, oldest first, filtered by a minimum level."""

from __future__ import annotations

import asyncpg

from headrace.messages import LogLevel

LEVEL_ORDER: tuple[LogLevel, ...] = (
    LogLevel.TRACE,
    LogLevel.DEBUG,
    LogLevel.INFO,
    LogLevel.WARN,
    LogLevel.ERROR,
)


def levels_at_least(min_level: LogLevel) -> list[str]:
    return [str(level) for level in LEVEL_ORDER[LEVEL_ORDER.index(min_level) :]]


class LogRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(
        self,
        execution_id: str,
        min_level: LogLevel | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """Lines at `min_level` or above, oldest first; `limit` lines from `offset` on."""
        levels = None if min_level is None else levels_at_least(min_level)
        rows = await self._pool.fetch(
            "SELECT id, execution_id, namespace, flow_id, task_run_id, task_id, attempt,"
            " time, level, message FROM logs"
            " WHERE execution_id = $1 AND ($2::text[] IS NULL OR level = ANY($2))"
            " ORDER BY time, n LIMIT $3 OFFSET $4",
            execution_id,
            levels,
            limit,
            offset,
        )
        return [
            {
                "id": r["id"],
                "executionId": r["execution_id"],
                "namespace": r["namespace"],
                "flowId": r["flow_id"],
                "taskRunId": r["task_run_id"],
                "taskId": r["task_id"],
                "attempt": r["attempt"],
                "timestamp": r["time"],
                "level": r["level"],
                "message": r["message"],
            }
            for r in rows
        ]

    async def exists(self, execution_id: str) -> bool:
        """Whether the execution has any line at all, whatever its level."""
        return await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM logs WHERE execution_id = $1)", execution_id
        )
