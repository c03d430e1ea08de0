"""Waiting for an execution to end, for `POST /executions/…?wait=true`.

The indexer sends `NOTIFY headrace_executions, '<id>'` when an execution reaches a
terminal state; one LISTEN connection per gateway wakes the matching waiters. A poll of
the row every second backs it up, so a lost notification or a dropped LISTEN connection
costs latency, never a hung request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from headrace.db.executions import ExecutionRepository
from headrace.db.indexing import NOTIFY_CHANNEL
from headrace.db.pool import DatabaseError, connect

log = logging.getLogger(__name__)

# The fallback poll: the longest a lost notification delays an answer.
POLL_INTERVAL_S = 1.0


class ExecutionWaiter:
    def __init__(self, database_url: str, executions: ExecutionRepository) -> None:
        self._database_url = database_url
        self._executions = executions
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        try:
            self._conn = await connect(self._database_url)
            await self._conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (DatabaseError, asyncpg.PostgresError, OSError) as exc:
            log.warning("LISTEN %s unavailable, waiting by polling only: %s", NOTIFY_CHANNEL, exc)
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(asyncpg.InterfaceError, OSError):
                await conn.close(timeout=2)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, execution_id: str) -> None:
        for event in self._waiting.get(execution_id, ()):
            event.set()

    async def wait_for_end(self, execution_id: str, timeout_s: float) -> dict | None:
        """The execution once terminal, or None when `timeout_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        woken = asyncio.Event()
        self._waiting.setdefault(execution_id, set()).add(woken)
        try:
            while True:
                # Clear before reading: a notification landing after the read still wakes us.
                woken.clear()
                state = await self._executions.state(execution_id)
                if state is not None and state.is_terminal:
                    return await self._executions.get(execution_id)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(POLL_INTERVAL_S, remaining))
        finally:
            waiters = self._waiting.get(execution_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiting[execution_id]
