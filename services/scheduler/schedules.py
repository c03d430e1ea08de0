"""The schedule component of the scheduler: fires each cron tick exactly once.

A pass reads every schedule trigger's watermark (`trigger_state.last_tick`), and for
each trigger with a tick due it claims the row, publishes the due ticks' `TriggerEvent`s
(awaiting the broker's ack), then advances the watermark by compare-and-set. Ids are
derived from the tick (`headrace.flow.schedule_ticks`), so the only duplicate a crash
can cause — publish done, advance lost — is the same execution id again, which the
executor ignores. Between passes it sleeps until the next tick (at most
`MAX_SLEEP_S`, so new flows and runtime switches are seen quickly).

Late start: a trigger seen for the first time starts from now; ticks older than
`LATE_AFTER` are "missed" and follow `recoverMissedSchedules` (ALL, LAST, NONE).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from headrace.admission import StartRefused
from headrace.db.triggers import (
    ClaimedTrigger,
    TriggerKey,
    TriggerState,
    TriggerStateRepository,
)
from headrace.expressions import ExpressionError
from headrace.flow.cron import CronError, CronSchedule, MissedPolicy, plan_due
from headrace.flow.schedule_ticks import schedule_of, tick_event
from headrace.flow.triggers import SCHEDULE, ScheduleTrigger
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.topics.definitions import TRIGGERS

log = logging.getLogger(__name__)

# A tick this much older than the pass that sees it was missed (the scheduler was down
# or stalled), not merely a few milliseconds late: the missed-schedule policy applies.
LATE_AFTER = timedelta(seconds=10)
# Missed ticks fired per trigger per pass (ALL): a long outage of a per-second schedule
# is caught up in paced batches instead of one burst of millions of events.
MAX_TICKS_PER_PASS = 1000
# Longest sleep between passes, in seconds: how soon a new flow or a switch is noticed.
MAX_SLEEP_S = 1.0
# A schedule's watermark is dropped once its trigger has been gone this long (seconds):
# longer than a scheduler takes to read a new flow, so one that has not read it yet
# does not drop the watermark another one just created.
FORGET_AFTER_S = 10.0
# After a broker or database error, the pause before the next pass, in seconds.
ERROR_BACKOFF_S = 1.0

Clock = Callable[[], datetime]


class Catalog(Protocol):
    """What the runner needs of `TriggerCatalog` (tests pass their own few triggers)."""

    def of_kind(self, kind: str) -> list[DeclaredTrigger]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class ScheduleRunner:
    def __init__(
        self,
        catalog: Catalog,
        states: TriggerStateRepository,
        producer: AIOKafkaProducer,
        clock: Clock = utc_now,
    ) -> None:
        self._catalog = catalog
        self._states = states
        self._producer = producer
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                delay = await self.run_once(self._clock())
            except (KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.error("schedule pass failed, retrying in %.0f s: %s", ERROR_BACKOFF_S, exc)
                delay = ERROR_BACKOFF_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run_once(self, now: datetime) -> float:
        """One pass at `now`; returns the seconds until the next pass is useful."""
        declared = self._catalog.of_kind(SCHEDULE)
        forgotten = await self._states.forget_undeclared(
            [item.key for item in declared], FORGET_AFTER_S
        )
        if forgotten:
            log.info("%d schedules no longer declared: their watermarks were dropped", forgotten)
        states = await self._states.list() if declared else {}
        wake = now + timedelta(seconds=MAX_SLEEP_S)
        started, pass_start = time.monotonic(), now
        for item in declared:
            # A long catch-up of one trigger must not make the next ones look late.
            elapsed = time.monotonic() - started
            if elapsed >= 1.0:
                now = pass_start + timedelta(seconds=elapsed)
            try:
                due = await self._pass_one(item, states, now)
            except CronError as exc:  # refused at load since; an older stored flow
                log.error("schedule %s skipped: %s", "/".join(item.key), exc)
                continue
            if due is not None:
                wake = min(wake, due)
        return max(0.0, (wake - self._clock()).total_seconds())

    async def _pass_one(
        self, item: DeclaredTrigger, states: dict[TriggerKey, TriggerState], now: datetime
    ) -> datetime | None:
        """Fire what is due of one schedule; returns when it is next due (None: off)."""
        spec = item.trigger.spec()
        assert isinstance(spec, ScheduleTrigger)
        schedule = schedule_of(spec)
        state = states.get(item.key)
        if state is None or state.last_tick is None or state.schedule != schedule.fingerprint:
            state = await self._states.ensure(
                item.key, schedule.fingerprint, now, schedule.next_after(now)
            )
        if state.disabled:
            return None
        assert state.last_tick is not None
        due = schedule.next_after(state.last_tick)
        if due <= now:
            more = await self._fire(item, spec, schedule, now)
            due = now if more else schedule.next_after(now)
        return due

    async def _fire(
        self, item: DeclaredTrigger, spec: ScheduleTrigger, schedule: CronSchedule, now: datetime
    ) -> bool:
        """Publish the due ticks of one trigger; True when more are due at once (a paced catch-up)."""
        async with self._states.claim(item.key) as claimed:
            if claimed is None or claimed.state.disabled or claimed.state.last_tick is None:
                return False  # another scheduler has it, or it was switched off meanwhile
            plan = plan_due(
                schedule,
                MissedPolicy(spec.recover_missed_schedules),
                claimed.state.last_tick,
                now,
                late_after=LATE_AFTER,
                limit=MAX_TICKS_PER_PASS,
                max_delay=spec.late_maximum_delay,
            )
            name = "/".join(item.key)
            if plan.truncated:
                log.warning(
                    "schedule %s: more than %d missed ticks; firing the oldest %d now, the rest "
                    "in the next passes",
                    name,
                    MAX_TICKS_PER_PASS,
                    MAX_TICKS_PER_PASS,
                )
            if plan.skipped_missed:
                log.warning(
                    "schedule %s: skipped %d missed ticks (recoverMissedSchedules: %s)",
                    name,
                    plan.skipped_missed,
                    spec.recover_missed_schedules,
                )
            if plan.skipped_late:
                log.warning(
                    "schedule %s: skipped %d ticks older than lateMaximumDelay %s",
                    name,
                    plan.skipped_late,
                    spec.late_maximum_delay,
                )
            if plan.advance_to is None:
                return False
            await self._publish_and_advance(
                item, spec, schedule, claimed, plan.fire, plan.advance_to
            )
            return plan.truncated

    async def _publish_and_advance(
        self,
        item: DeclaredTrigger,
        spec: ScheduleTrigger,
        schedule: CronSchedule,
        claimed: ClaimedTrigger,
        ticks: list[datetime],
        advance_to: datetime,
    ) -> None:
        name = "/".join(item.key)
        error: str | None = None
        sent: list[asyncio.Future] = []
        last_execution_id: str | None = None
        for tick in ticks:
            try:
                start = tick_event(item.flow, item.revision, item.trigger.id, spec, tick)
            except (ExpressionError, StartRefused) as exc:
                # A bad tick is skipped, not retried forever: the same inputs would fail again.
                error = f"tick {schedule.local_iso(tick)} skipped: {exc}"
                log.error("schedule %s: %s", name, error)
                continue
            if start is None:
                log.debug("schedule %s: tick %s: conditions false", name, tick)
                continue
            last_execution_id = start.event.execution_id
            key = last_execution_id.encode()
            sent.append(await self._producer.send(TRIGGERS.name, start.value, key=key))
        # Publish before advancing: a crash in between re-publishes the same ids.
        await asyncio.gather(*sent)
        moved = await claimed.advance(
            advance_to, schedule.next_after(advance_to), last_execution_id, error
        )
        if not moved:
            log.info("schedule %s: watermark moved by another scheduler meanwhile", name)
