"""Following an execution live: its log lines and its states as Server-Sent Events.

`GET /api/v1/logs/{id}/follow` sends the lines stored so far, then each new one as the
indexer stores it; `GET /api/v1/executions/{id}/follow` sends the execution (as `GET
/executions/{id}` answers it) now and after each change. Both end with an `end` event
once the execution has ended (and, for logs, its last lines had time to arrive).

No gap, no duplicate: each line's SSE id is its insertion number in PostgreSQL (`n`),
each execution event's id the highest `seq` the index holds for it, and a reconnecting
client sends the last id it got (`Last-Event-ID`, as browsers' EventSource do, or
`?lastEventId=`): the stream resumes after it. Lines of one execution are stored by the
one indexer consuming its partition, one transaction after another, so their numbers
only grow.

What wakes a follower: the indexer's `NOTIFY headrace_changes, '<id>,<id>,…'` listing
the executions a batch changed. The gateway LISTENs to that channel only while someone
follows (`ChangeFeed`): under load it carries a few notices per indexer batch, which an
idle gateway need not decode. A poll backs it up (a lost notice costs latency,
never a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web

from headrace.db.indexing import CHANGES_CHANNEL
from headrace.db.pool import DatabaseError, connect
from headrace.ids import looks_like_id
from headrace.services.gateway.context import gateway
from headrace.services.gateway.logs_api import log_filter
from headrace.services.gateway.responses import ApiError, json_bytes
from headrace.services.gateway.waiter import client_gone
from headrace.states import State

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Lines read per query: a follower catching up on a big execution sends them in slices.
FOLLOW_BATCH = 1_000
# The fallback poll: while listening (notices do the work), and while not.
LISTENING_POLL_S = 5.0
POLL_S = 1.0
# After the execution ended, the stream stays open until no line came for this long: a
# task's last lines and its result travel on different topics, so they may be indexed
# after the execution's end.
END_GRACE_S = 1.0
# How long a follower of an execution the index does not know waits for it to appear.
UNKNOWN_GRACE_S = 10.0
# Streams one gateway holds at most: each polls PostgreSQL now and then.
MAX_FOLLOWERS = 1_000
# A comment line this often keeps proxies and load balancers from closing a quiet stream.
KEEPALIVE_S = 15.0


class ChangeFeed:
    """Wakes followers of an execution when the indexer announces a change of it."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._followers: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self.closed = asyncio.Event()  # set at the gateway's stop: every stream ends

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def following(self) -> int:
        return sum(len(events) for events in self._followers.values())

    @contextlib.asynccontextmanager
    async def watch(self, execution_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `execution_id` changes (and when the feed closes)."""
        woken = asyncio.Event()
        self._followers.setdefault(execution_id, set()).add(woken)
        try:
            await self._listen()
            yield woken
        finally:
            followers = self._followers.get(execution_id)
            if followers is not None:
                followers.discard(woken)
                if not followers:
                    del self._followers[execution_id]
            if not self._followers:
                await self._unlisten()

    async def _listen(self) -> None:
        async with self._lock:
            if self.listening or self.closed.is_set():
                return
            try:
                conn = await connect(self._database_url)
            except (DatabaseError, asyncpg.PostgresError, OSError) as exc:
                log.warning("LISTEN %s failed, following by polling: %s", CHANGES_CHANNEL, exc)
                return
            try:
                await conn.add_listener(CHANGES_CHANNEL, self._on_notice)
            except BaseException as exc:  # a cancellation too: the connection must not leak
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
                if not isinstance(exc, asyncpg.PostgresError | OSError):
                    raise
                log.warning("LISTEN %s failed, following by polling: %s", CHANGES_CHANNEL, exc)
                return
            conn.add_termination_listener(self._on_terminated)
            self._conn = conn

    async def _unlisten(self) -> None:
        async with self._lock:
            if self._followers or self._conn is None:
                return  # a new follower came meanwhile
            conn, self._conn = self._conn, None
            with contextlib.suppress(asyncpg.InterfaceError, OSError, asyncpg.PostgresError):
                await conn.close(timeout=2)

    def _on_notice(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        followers = self._followers
        for execution_id in payload.split(","):  # the indexer lists a batch's executions
            for event in followers.get(execution_id, ()):
                event.set()

    def _on_terminated(self, _conn: object) -> None:
        self._conn = None  # followers poll; the next new follower listens again
        self._wake_all()

    def _wake_all(self) -> None:
        for events in self._followers.values():
            for event in events:
                event.set()

    async def close(self) -> None:
        self.closed.set()
        self._wake_all()
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(asyncpg.InterfaceError, OSError, asyncpg.PostgresError):
                await conn.close(timeout=2)

    async def wait(self, woken: asyncio.Event, timeout_s: float) -> None:
        """Until `woken` is set or `timeout_s` passed (shorter while not listening)."""
        poll = LISTENING_POLL_S if self.listening else POLL_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), min(poll, timeout_s))


# ------------------------------------------------------------------ Server-Sent Events


class ClientLeft(Exception):
    """The client closed the stream: nobody to answer, and not the gateway's error."""


class EventStream:
    """One SSE answer: events written as they come, a comment when quiet."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        self._last_write = 0.0

    async def open(self) -> None:
        await self.response.prepare(self.request)
        self._last_write = asyncio.get_running_loop().time()

    async def send(self, event: str, data: Any, event_id: int | None = None) -> None:
        frame = b""
        if event_id is not None:
            frame += b"id: %d\n" % event_id
        frame += b"event: " + event.encode() + b"\ndata: " + json_bytes(data) + b"\n\n"
        await self._write(frame)

    async def keep_alive(self) -> None:
        if asyncio.get_running_loop().time() - self._last_write >= KEEPALIVE_S:
            await self._write(b": keep-alive\n\n")

    async def _write(self, frame: bytes) -> None:
        try:
            await self.response.write(frame)
        except ConnectionResetError:
            raise ClientLeft from None
        self._last_write = asyncio.get_running_loop().time()

    @property
    def gone(self) -> bool:
        return client_gone(self.request)


def last_event_id(request: web.Request) -> int:
    """Where a resuming client stopped: `Last-Event-ID` or `?lastEventId=`, else 0."""
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId") or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:  # ids are PostgreSQL bigints
        raise ApiError(400, f"Last-Event-ID must be an id this stream sent, not {raw!r}")
    return value


async def _wait_known(
    request: web.Request,
    feed: ChangeFeed,
    woken: asyncio.Event,
    execution_id: str,
    *,
    lines_will_do: bool,
) -> None:
    """Return once the index knows the execution (or, with `lines_will_do`, has a line
    of it); 404 if it still does not after `UNKNOWN_GRACE_S`: an execution just started
    is indexed a moment later, and a follower started right after it must not be told
    it does not exist."""
    gw = gateway(request)
    loop = asyncio.get_running_loop()
    # Not an id headrace makes: no use waiting for it (a typo is answered at once).
    deadline = loop.time() + (UNKNOWN_GRACE_S if looks_like_id(execution_id) else 0)
    while True:
        woken.clear()
        if await gw.executions.state(execution_id) is not None:
            return
        if lines_will_do and await gw.logs.exists(execution_id):
            return
        remaining = deadline - loop.time()
        if remaining <= 0 or feed.closed.is_set():
            raise ApiError(404, f"execution {execution_id} not found")
        await feed.wait(woken, min(remaining, POLL_S))


# ------------------------------------------------------------------ routes


def _feed(request: web.Request) -> ChangeFeed:
    feed = gateway(request).changes
    if feed is None:
        raise ApiError(503, "this gateway follows no execution live (it has no change feed)")
    if feed.following >= MAX_FOLLOWERS:
        raise ApiError(
            503,
            f"this gateway follows {MAX_FOLLOWERS} streams already: try again later, or"
            " another gateway",
        )
    return feed


async def follow_logs(request: web.Request) -> web.StreamResponse:
    """The execution's lines (matching the filters of `GET /logs/{id}`), then live ones."""
    gw = gateway(request)
    execution_id = request.match_info["executionId"]
    filter = log_filter(request)  # the same filters as `GET /logs/{id}`
    after = last_event_id(request)
    feed = _feed(request)
    stream = EventStream(request)
    loop = asyncio.get_running_loop()
    async with feed.watch(execution_id) as woken:
        # Lines without an execution do happen (a kill of an id the executor never held
        # is logged): they are shown, and the stream ends once no execution came.
        await _wait_known(request, feed, woken, execution_id, lines_will_do=True)
        await stream.open()
        opened = loop.time()
        quiet_since: float | None = None  # when the execution was seen ended, lines aside
        while not feed.closed.is_set() and not stream.gone:
            woken.clear()  # before reading: a notice landing after the read wakes us
            lines, after, full = await gw.logs.after(execution_id, after, FOLLOW_BATCH, filter)
            for number, line in lines:
                await stream.send("log", line, number)
            if full:
                continue  # catching up: read on at once
            if lines:
                quiet_since = None
            state = await gw.executions.state(execution_id)
            if (state is not None and state.is_terminal) or (
                state is None and loop.time() - opened >= UNKNOWN_GRACE_S
            ):
                if quiet_since is None:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= END_GRACE_S:
                    await stream.send("end", {"state": None if state is None else str(state)})
                    break
            await stream.keep_alive()
            await feed.wait(woken, END_GRACE_S if quiet_since is not None else KEEPALIVE_S)
    return stream.response


async def follow_execution(request: web.Request) -> web.StreamResponse:
    """The execution with all its task runs, then at every change the execution with the
    task runs that changed, until it ends."""
    gw = gateway(request)
    execution_id = request.match_info["executionId"]
    sent = last_event_id(request)
    feed = _feed(request)
    stream = EventStream(request)
    async with feed.watch(execution_id) as woken:
        await _wait_known(request, feed, woken, execution_id, lines_will_do=False)
        await stream.open()
        sent_state: str | None = None
        while not feed.closed.is_set() and not stream.gone:
            woken.clear()
            version = await gw.executions.version(execution_id)
            execution = None
            if version > sent:
                # The first event has every task run; the next ones those that changed.
                execution = await gw.executions.get(execution_id, runs_after=sent or None)
                if execution is not None:
                    await stream.send("execution", execution, version)
                    sent, sent_state = version, execution["state"]["current"]
            if execution is not None:  # the state just read: no second query
                state: State | None = State(execution["state"]["current"])
            else:
                state = await gw.executions.state(execution_id)
            if state is not None and state.is_terminal:
                if str(state) != sent_state:
                    # Ended without a new event (a lost execution closed by the indexer):
                    # its last state, so that the follower does not keep a stale one.
                    execution = await gw.executions.get(execution_id, runs_after=sent or None)
                    if execution is not None:
                        await stream.send("execution", execution, sent)
                await stream.send("end", {"state": str(state)})
                break
            await stream.keep_alive()
            await feed.wait(woken, KEEPALIVE_S)
    return stream.response


def _until_the_client_leaves(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ClientLeft:
            log.debug("%s: the client left", request.path)
            return web.Response(status=499)  # not sent: its connection is gone

    return handle


def add_routes(app: web.Application, prefix: str) -> None:
    follow_logs_route = _until_the_client_leaves(follow_logs)
    follow_execution_route = _until_the_client_leaves(follow_execution)
    app.router.add_get(prefix + "/logs/{executionId}/follow", follow_logs_route)
    app.router.add_get(prefix + "/executions/{executionId}/follow", follow_execution_route)
