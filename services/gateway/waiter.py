"""Waiting for an execution to end (`POST /executions/…?wait=true`), or for the
executor's answer to a kill, resume, restart or replay.

The indexer sends `NOTIFY headrace_executions, '<id>'` when an execution reaches a
terminal state or a command of it was answered; one LISTEN connection per gateway wakes
the matching waiters. A poll of
the row backs it up, so a lost notification or a dropped LISTEN connection costs
latency, never a hung request: every `LISTENING_POLL_S` while the LISTEN connection is
up (a notification is only lost with it), every `POLL_INTERVAL_S` while it is down. A
dropped LISTEN connection is reopened in the background, and every waiter then reads
its row once, in case its notification went out meanwhile.

`while_connected` ties any wait to the HTTP client that asked for it: aiohttp does not
cancel a handler whose client left (its default), so without it an abandoned
`wait=true` would keep polling PostgreSQL until its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from aiohttp import web

from headrace.db.executions import ExecutionRepository
from headrace.db.indexing import NOTIFY_CHANNEL
from headrace.db.pool import DatabaseError, connect
from headrace.services.gateway.responses import ApiError, loggable_path

log = logging.getLogger(__name__)

# The fallback poll without LISTEN: the longest a missed notification delays an answer.
POLL_INTERVAL_S = 1.0
# With LISTEN up, notifications do the work: a rare poll, 1/15th of the queries.
LISTENING_POLL_S = 15.0
# How often a dropped LISTEN connection is tried again.
RECONNECT_INTERVAL_S = 5.0
# How often a waiting request checks that its client is still connected: an in-memory
# look at the socket, no query.
DISCONNECT_CHECK_S = 0.2

T = TypeVar("T")


class ClientGone(ApiError):
    """The HTTP client closed its connection while its request was waiting. Its answer
    (499, as nginx logs it) reaches nobody; the middleware needs no special case."""

    def __init__(self, request: web.Request) -> None:
        super().__init__(499, f"{request.method} {loggable_path(request)}: the client went away")


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def while_connected(request: web.Request, wait: Awaitable[T]) -> T:
    """`wait`'s result; cancels it and raises `ClientGone` once the client has left."""
    task = asyncio.ensure_future(wait)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_CHECK_S)
            if done:
                return task.result()
            if client_gone(request):
                raise ClientGone(request)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class ExecutionWaiter:
    def __init__(self, database_url: str, executions: ExecutionRepository) -> None:
        self._database_url = database_url
        self._executions = executions
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def waiting(self) -> int:
        """Waits in progress (each one polls PostgreSQL now and then)."""
        return sum(len(events) for events in self._waiting.values())

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def start(self) -> None:
        if not await self._listen():
            log.warning("LISTEN %s unavailable, waiting by polling only", NOTIFY_CHANNEL)

    async def _listen(self) -> bool:
        try:
            conn = await connect(self._database_url)
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (DatabaseError, asyncpg.PostgresError, OSError) as exc:
            log.debug("LISTEN %s failed: %s", NOTIFY_CHANNEL, exc)
            return False
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        return True

    def _on_terminated(self, _conn: object) -> None:
        self._conn = None
        self._wake_all()  # back to polling every second from now on
        if not self._closed and self._reconnecting is None:
            self._reconnecting = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self._closed and not await self._listen():
                await asyncio.sleep(RECONNECT_INTERVAL_S)
            self._wake_all()  # a notification may have gone out while we were away
        finally:
            self._reconnecting = None

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(asyncpg.InterfaceError, OSError):
                await conn.close(timeout=2)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, execution_id: str) -> None:
        for event in self._waiting.get(execution_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()

    async def wait_for_end(self, execution_id: str, timeout_s: float) -> dict | None:
        """The execution once terminal, or None when `timeout_s` passed first."""

        async def ended() -> dict | None:
            state = await self._executions.state(execution_id)
            if state is not None and state.is_terminal:
                return await self._executions.get(execution_id)
            return None

        return await self._wait(execution_id, ended, timeout_s)

    async def wait_for_answer(
        self, execution_id: str, command_id: str, timeout_s: float
    ) -> dict | None:
        """The executor's answer to a command (`ExecutionRepository.answer`), or None when
        `timeout_s` passed first. The indexer notifies the execution's id for it too."""
        return await self._wait(
            execution_id, lambda: self._executions.answer(command_id), timeout_s
        )

    async def _wait(
        self, execution_id: str, read: Callable[[], Awaitable[T | None]], timeout_s: float
    ) -> T | None:
        """`read()`'s first non-None result, read again whenever the indexer notifies
        `execution_id` (and at the fallback poll); None after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        woken = asyncio.Event()
        self._waiting.setdefault(execution_id, set()).add(woken)
        try:
            while True:
                # Clear before reading: a notification landing after the read still wakes us.
                woken.clear()
                found = await read()
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                poll = LISTENING_POLL_S if self.listening else POLL_INTERVAL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(poll, remaining))
        finally:
            waiters = self._waiting.get(execution_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiting[execution_id]
