"""Durable timers, the executor's only notion of time passing.

Timers are part of each execution's state in the table (so they survive restarts); this
queue is the in-memory index of when the next one is due. It is rebuilt from the table
after recovery. When a timer comes due we do not touch state here: we publish an
`ExecutionCommand(TIMER)` to `execution-commands`, keyed by execution id, so the event
reaches the partition owner like any other and the core decides (a stale timer is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from headrace.core.state import Timer

FireTimer = Callable[[str, Timer], Awaitable[None]]


class TimerQueue:
    def __init__(self, fire: FireTimer) -> None:
        self._fire = fire
        self._heap: list[tuple[datetime, int, str, Timer]] = []
        self._order = itertools.count()  # ties break in push order, never on Timer
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, execution_id: str, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.due, next(self._order), execution_id, timer))
        self._changed.set()

    async def run(self) -> None:
        """Fire timers as they come due; runs until cancelled."""
        while True:
            self._changed.clear()
            now = datetime.now(UTC)
            while self._heap and self._heap[0][0] <= now:
                _, _, execution_id, timer = heapq.heappop(self._heap)
                await self._fire(execution_id, timer)
            wait = (self._heap[0][0] - now).total_seconds() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
