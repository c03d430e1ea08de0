"""Durable timers, the executor's only notion of time passing.

Timers are part of each execution's state in the table (so they survive restarts); this
queue fires them from an index of when each is due (timer_index.py: in memory, or on
disk), rebuilt from the table after recovery. When a timer comes due we do not touch
state here: we publish an `ExecutionCommand(TIMER)` to `execution-commands`, keyed by
execution id, so the event reaches the partition owner like any other and the core
decides (a stale timer is a no-op).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from headrace.core.state import Timer
from headrace.services.executor.timer_index import HeapIndex, TimerIndex

log = logging.getLogger(__name__)

FireTimer = Callable[[str, Timer], Awaitable[None]]
RETRY_FIRE_S = 1.0
# Timers fired together: their commands are sent at once and their acknowledgements
# awaited together; the loop then lets the executor's batches run.
FIRE_SLICE = 100


class TimerQueue:
    def __init__(self, fire: FireTimer, index: TimerIndex | None = None) -> None:
        self._fire = fire
        self.index: TimerIndex = index if index is not None else HeapIndex()
        self._changed = asyncio.Event()

    def push(self, execution_id: str, timer: Timer) -> None:
        self.index.add(execution_id, timer)
        self._changed.set()

    def clear(self) -> None:
        self.index.clear()

    async def run(self) -> None:
        """Fire timers as they come due, up to `FIRE_SLICE` at once (a backlog due together,
        after an outage or for a million paused executions, must not be sent one
        acknowledgement at a time); runs until cancelled."""
        while True:
            self._changed.clear()
            now = datetime.now(UTC)
            while due := self.index.take_due(now, FIRE_SLICE):
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
            next_due = self.index.next_due()
            wait = (next_due - now).total_seconds() if next_due is not None else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
