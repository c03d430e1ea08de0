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
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from headrace.core.state import Timer

log = logging.getLogger(__name__)

FireTimer = Callable[[str, Timer], Awaitable[None]]
RETRY_FIRE_S = 1.0
# Timers fired together: their commands are sent at once and their acknowledgements
# awaited together; the loop then lets the executor's batches run.
FIRE_SLICE = 100


class TimerQueue:
    def __init__(self, fire: FireTimer) -> None:
        self._fire = fire
        self._heap: list[tuple[datetime, int, str, Timer]] = []
        self._order = itertools.count()  # ties break in push order, never on Timer
        self._changed = asyncio.Event()
        self._pending: set[tuple[str, Timer]] = set()  # what the heap holds: no duplicates

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, execution_id: str, timer: Timer) -> None:
        if (execution_id, timer) in self._pending:
            return
        self._pending.add((execution_id, timer))
        heapq.heappush(self._heap, (timer.due, next(self._order), execution_id, timer))
        self._changed.set()

    def clear(self) -> None:
        self._heap.clear()
        self._pending.clear()

    async def run(self) -> None:
        """Fire timers as they come due, up to `FIRE_SLICE` at once (a backlog due together,
        after an outage or for a million paused executions, must not be sent one
        acknowledgement at a time); runs until cancelled."""
        while True:
            self._changed.clear()
            now = datetime.now(UTC)
            while self._heap and self._heap[0][0] <= now:
                due = []
                while self._heap and self._heap[0][0] <= now and len(due) < FIRE_SLICE:
                    _, _, execution_id, timer = heapq.heappop(self._heap)
                    self._pending.discard((execution_id, timer))
                    due.append((execution_id, timer))
                fired = await asyncio.gather(
                    *(self._fire(execution_id, timer) for execution_id, timer in due),
                    return_exceptions=True,
                )
                for (execution_id, timer), outcome in zip(due, fired, strict=True):
                    if isinstance(outcome, Exception):
                        # The timer is still in the execution's state: try again shortly
                        # rather than let one broker hiccup end every retry and timeout.
                        log.error(
                            "could not fire a timer of %s (%s); retrying in %ss",
                            execution_id,
                            outcome,
                            RETRY_FIRE_S,
                        )
                        retry = now + timedelta(seconds=RETRY_FIRE_S)
                        self.push(execution_id, replace(timer, due=retry))
            wait = (self._heap[0][0] - now).total_seconds() if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
