"""Runtime state of declared triggers in PostgreSQL (`trigger_state`).

The scheduler keeps each schedule's watermark here: `last_tick` is the latest tick whose
event is on the `triggers` topic. A pass claims a trigger's row (`FOR UPDATE SKIP
LOCKED`: a second scheduler skips it instead of waiting), publishes, then advances
`last_tick` with a compare-and-set, so two schedulers never both do one tick's work and
a crash between publish and advance only re-publishes the same execution id.

The API's on/off switch (`disabled`) lives here too, apart from the YAML's `disabled`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg

TriggerKey = tuple[str, str, str]  # (namespace, flow id, trigger id)

_COLUMNS = (
    "namespace, flow_id, trigger_id, last_tick, next_tick, last_execution_id, disabled,"
    " last_error, updated_at, schedule, stopped_state, stopped_execution_id, stopped_at"
)


@dataclass(frozen=True, slots=True)
class TriggerState:
    namespace: str
    flow_id: str
    trigger_id: str
    last_tick: datetime | None
    next_tick: datetime | None
    last_execution_id: str | None
    disabled: bool
    last_error: str | None
    updated_at: datetime
    schedule: str | None = None  # the cron and zone `last_tick` was kept for
    # Set when `stopAfter` switched the trigger off: the end state, its execution, when.
    stopped_state: str | None = None
    stopped_execution_id: str | None = None
    stopped_at: datetime | None = None

    @property
    def key(self) -> TriggerKey:
        return (self.namespace, self.flow_id, self.trigger_id)


def _state(row: asyncpg.Record) -> TriggerState:
    return TriggerState(**dict(row))


class ClaimedTrigger:
    """A trigger row locked by this scheduler for one pass (see `TriggerStateRepository.claim`)."""

    def __init__(self, conn: asyncpg.Connection, state: TriggerState) -> None:
        self._conn = conn
        self.state = state

    async def advance(
        self,
        last_tick: datetime,
        next_tick: datetime | None,
        last_execution_id: str | None,
        last_error: str | None,
    ) -> bool:
        """Move the watermark from what was read to `last_tick`; False if it moved meanwhile."""
        status = await self._conn.execute(
            "UPDATE trigger_state SET last_tick = $4, next_tick = $5,"
            " last_execution_id = coalesce($6, last_execution_id), last_error = $7,"
            " updated_at = now()"
            " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3"
            " AND last_tick IS NOT DISTINCT FROM $8",
            *self.state.key,
            last_tick,
            next_tick,
            last_execution_id,
            last_error,
            self.state.last_tick,
        )
        return status == "UPDATE 1"


class TriggerStateRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(
        self, namespace: str | None = None, flow_id: str | None = None
    ) -> dict[TriggerKey, TriggerState]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM trigger_state"
            " WHERE ($1::text IS NULL OR namespace = $1 OR starts_with(namespace, $1 || '.'))"
            " AND ($2::text IS NULL OR flow_id = $2)",
            namespace,
            flow_id,
        )
        return {state.key: state for state in map(_state, rows)}

    async def get(self, key: TriggerKey) -> TriggerState | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM trigger_state"
            " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3",
            *key,
        )
        return None if row is None else _state(row)

    async def ensure(
        self, key: TriggerKey, schedule: str, first_seen: datetime, next_tick: datetime | None
    ) -> TriggerState:
        """The schedule's row, its watermark at `first_seen` when it has none yet or was
        kept for another schedule (`schedule`: the cron and zone, see `CronSchedule`).

        A new or changed schedule fires nothing before it was first seen; when two
        schedulers see it at once, the first write wins and both read that row.
        """
        row = await self._pool.fetchrow(
            "INSERT INTO trigger_state"
            " (namespace, flow_id, trigger_id, last_tick, next_tick, schedule)"
            " VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (namespace, flow_id, trigger_id) DO UPDATE SET"
            " last_tick = CASE WHEN trigger_state.last_tick IS NULL"
            "   OR trigger_state.schedule <> EXCLUDED.schedule"
            "   THEN EXCLUDED.last_tick ELSE trigger_state.last_tick END,"
            " next_tick = CASE WHEN trigger_state.last_tick IS NULL"
            "   OR trigger_state.schedule <> EXCLUDED.schedule"
            "   THEN EXCLUDED.next_tick ELSE trigger_state.next_tick END,"
            " schedule = EXCLUDED.schedule, updated_at = now()"
            f" RETURNING {_COLUMNS}",
            *key,
            first_seen,
            next_tick,
            schedule,
        )
        return _state(row)

    async def forget_undeclared(self, declared: list[TriggerKey], quiet_for_s: float) -> int:
        """Drop the watermarks of schedules no longer declared (flow deleted or disabled
        in YAML, trigger removed), so that one coming back starts from then; rows touched
        in the last `quiet_for_s` seconds are kept (another scheduler may know newer
        flows than our catalog). Returns how many were dropped."""
        status = await self._pool.execute(
            "UPDATE trigger_state SET last_tick = NULL, next_tick = NULL, updated_at = now()"
            " WHERE schedule IS NOT NULL AND last_tick IS NOT NULL"
            " AND updated_at < now() - make_interval(secs => $4)"
            " AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[], $3::text[])"
            "   AS d(namespace, flow_id, trigger_id)"
            "   WHERE d.namespace = trigger_state.namespace"
            "   AND d.flow_id = trigger_state.flow_id AND d.trigger_id = trigger_state.trigger_id)",
            [k[0] for k in declared],
            [k[1] for k in declared],
            [k[2] for k in declared],
            quiet_for_s,
        )
        return int(status.split()[-1])

    @asynccontextmanager
    async def claim(self, key: TriggerKey) -> AsyncIterator[ClaimedTrigger | None]:
        """Lock the trigger's row until the block ends (None: another scheduler holds it).

        The lock is a transaction's row lock: if this process dies mid-pass, PostgreSQL
        drops the connection and the lock with it.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM trigger_state"
                " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3"
                " FOR UPDATE SKIP LOCKED",
                *key,
            )
            yield None if row is None else ClaimedTrigger(conn, _state(row))

    async def set_disabled(self, key: TriggerKey, disabled: bool, now: datetime) -> TriggerState:
        """The runtime switch. Enabling moves the watermark to `now`: the ticks that
        passed while the trigger was off are not caught up (use a backfill for that).
        `updated_at` is the switch's version on the `flows` topic: the clock when the row
        is written, under its lock, so two switches of one trigger are versioned in the
        order they were stored (`now()` is when the transaction began)."""
        row = await self._pool.fetchrow(
            "INSERT INTO trigger_state"
            " (namespace, flow_id, trigger_id, last_tick, disabled, updated_at)"
            " VALUES ($1, $2, $3, $5, $4, clock_timestamp())"
            " ON CONFLICT (namespace, flow_id, trigger_id) DO UPDATE SET"
            " disabled = EXCLUDED.disabled,"
            " last_tick = CASE WHEN trigger_state.disabled AND NOT EXCLUDED.disabled"
            "   THEN greatest(trigger_state.last_tick, EXCLUDED.last_tick)"
            "   ELSE trigger_state.last_tick END,"
            # Switched on again: the `stopAfter` reason is history.
            " stopped_state = CASE WHEN EXCLUDED.disabled THEN trigger_state.stopped_state END,"
            " stopped_execution_id = CASE WHEN EXCLUDED.disabled"
            "   THEN trigger_state.stopped_execution_id END,"
            " stopped_at = CASE WHEN EXCLUDED.disabled THEN trigger_state.stopped_at END,"
            " updated_at = clock_timestamp()"
            f" RETURNING {_COLUMNS}",
            *key,
            disabled,
            now,
        )
        return _state(row)

    async def stop_after(
        self, key: TriggerKey, state: str, execution_id: str
    ) -> TriggerState | None:
        """Switch the trigger off because `execution_id` ended in `state` (its
        `stopAfter`), with `updated_at` as the switch's version (see `set_disabled`).
        None when it was off already for another reason: a switch made since is not
        overwritten. Asked again for the same execution (its publish failed after this
        stored it), it answers the row again, so that the switch is published."""
        row = await self._pool.fetchrow(
            "INSERT INTO trigger_state (namespace, flow_id, trigger_id, disabled,"
            " stopped_state, stopped_execution_id, stopped_at, updated_at)"
            " VALUES ($1, $2, $3, true, $4, $5, clock_timestamp(), clock_timestamp())"
            " ON CONFLICT (namespace, flow_id, trigger_id) DO UPDATE SET disabled = true,"
            " stopped_state = EXCLUDED.stopped_state,"
            " stopped_execution_id = EXCLUDED.stopped_execution_id,"
            " stopped_at = EXCLUDED.stopped_at, updated_at = EXCLUDED.updated_at"
            " WHERE NOT trigger_state.disabled"
            " OR trigger_state.stopped_execution_id = EXCLUDED.stopped_execution_id"
            f" RETURNING {_COLUMNS}",
            *key,
            state,
            execution_id,
        )
        return None if row is None else _state(row)

    async def disabled_keys(self) -> set[TriggerKey]:
        """Triggers switched off at runtime (every scheduler component honours these)."""
        rows = await self._pool.fetch(
            "SELECT namespace, flow_id, trigger_id FROM trigger_state WHERE disabled"
        )
        return {(r["namespace"], r["flow_id"], r["trigger_id"]) for r in rows}

    async def disabled_in_flow(self, namespace: str, flow_id: str) -> set[str]:
        """The ids of one flow's triggers switched off at runtime."""
        rows = await self._pool.fetch(
            "SELECT trigger_id FROM trigger_state WHERE namespace = $1 AND flow_id = $2"
            " AND disabled",
            namespace,
            flow_id,
        )
        return {row["trigger_id"] for row in rows}
