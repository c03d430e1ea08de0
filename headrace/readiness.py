"""Is a service ready: for a supervisor (`headrace server local`, tests) and for probes.

Two ways to tell:
- a file: the supervisor passes a path in HEADRACE_READY_FILE; the service touches it
  once it is connected and consuming (`mark_ready`). Without the variable this does
  nothing.
- `/readyz` (`headrace.service_http`, and the gateway's): `Readiness` runs the service's
  checks (the broker answers, PostgreSQL answers, the service joined its consumer
  group) and says which failed.

Checks are cheap and bounded: each gets `CHECK_TIMEOUT_S` (a dead broker or database
answers "not ready" within it, never a hang), and a report is reused for `CACHE_S`, so a
burst of probes costs one round of checks; probes that come while a round runs wait for
that round.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.client import AIOKafkaClient

READY_FILE_ENV = "HEADRACE_READY_FILE"
CHECK_TIMEOUT_S = 1.0
CACHE_S = 2.0

# A check returns when what it checks is fine and raises, saying what is wrong, otherwise.
Check = Callable[[], Awaitable[None]]


def mark_ready() -> None:
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).touch()


@dataclass(frozen=True, slots=True)
class Report:
    ready: bool
    problems: dict[str, str]  # check name -> what is wrong

    def body(self) -> dict[str, Any]:
        if self.ready:
            return {"status": "ready"}
        return {"status": "unavailable", "problems": self.problems}


class Readiness:
    """A service's readiness checks by name, run together, each bounded in time."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        timeout_s: float = CHECK_TIMEOUT_S,
        cache_s: float = CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._last: tuple[float, Report] | None = None
        self._running: asyncio.Task[Report] | None = None

    async def report(self) -> Report:
        if self._last is not None and self._clock() - self._last[0] < self._cache_s:
            return self._last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._run())
        # Shielded: a probe that hangs up must not cancel the round others wait for.
        return await asyncio.shield(self._running)

    async def _run(self) -> Report:
        names = list(self._checks)
        outcomes = await asyncio.gather(
            *(self._one(self._checks[name]) for name in names), return_exceptions=False
        )
        problems = {name: problem for name, problem in zip(names, outcomes, strict=True) if problem}
        report = Report(not problems, problems)
        self._last = (self._clock(), report)
        return report

    async def _one(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await check()
        except TimeoutError:
            return f"no answer within {self._timeout_s:g} s"
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None


def flag_check(flag: Callable[[], bool], problem: str) -> Check:
    """A check of something the service knows (it joined its group, say)."""

    async def check() -> None:
        if not flag():
            raise RuntimeError(problem)

    return check


class BrokerCheck:
    """The broker answers a metadata request, on a connection of this check's own (its
    client is made at the first check and kept: a check is one round trip)."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self._client is None:
            client = AIOKafkaClient(
                bootstrap_servers=self._bootstrap,
                client_id=self._client_id,
                request_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
            )
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self._client = client
            return
        await self._client.fetch_all_metadata()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class DatabaseCheck:
    """PostgreSQL answers `SELECT 1`, on a connection of this check's own, kept while it
    works and made again after a failure."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self._url, timeout=CHECK_TIMEOUT_S)
            await self._connection.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()  # no goodbye round trip to a server that may be gone
