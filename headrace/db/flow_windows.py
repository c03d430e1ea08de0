"""Progress of flow triggers that wait for several upstream flows, in PostgreSQL.

Tables `flow_trigger_windows` (per trigger and window: which conditions are met, by
which upstream end) and `flow_trigger_ends` (every upstream end a trigger counted, and
the downstream execution it completed, if any). Kept here, not in a scheduler's memory,
because the ends of one window arrive on different partitions, possibly at different
schedulers, and must survive their crashes.

`count_end` is the one write. In one transaction it creates or locks the window's row,
then either returns what the end did when it was first counted (a re-delivered end:
the caller re-publishes the same execution), or lets the caller decide the window's new
progress from the stored one and saves both. Two schedulers counting ends of one window
queue on that row lock, so each sees the other's progress. A crash before the commit
leaves nothing behind; after it, the end is known and its firing is returned again.
Deciding is the caller's (`services.scheduler.flow_windows`, pure); this module only
stores JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from headrace.db.triggers import TriggerKey

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Firing:
    """A downstream execution an upstream end completed."""

    execution_id: str
    window_start: datetime
    upstreams: list[Json]  # the upstream ends that met the conditions, in listed order


@dataclass(frozen=True, slots=True)
class WindowChange:
    """The caller's decision for one end: the window's new progress, and what it fired."""

    satisfied: Json  # condition key -> upstream end
    firing: Firing | None


@dataclass(frozen=True, slots=True)
class CountedEnd:
    again: bool  # the end had been counted before: nothing changed now
    firing: Firing | None  # what it fired (then or now), to publish


class FlowWindowRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def count_end(
        self,
        key: TriggerKey,
        window_start: datetime,
        window_end: datetime | None,
        upstream_end: str,
        decide: Callable[[Json], WindowChange],
    ) -> CountedEnd:
        """Count `upstream_end` once for trigger `key` in the window starting at
        `window_start`; `decide` maps the window's stored progress to the change."""
        async with self._pool.acquire() as conn, conn.transaction():
            # Insert or touch: either way this transaction now holds the row's lock
            # (a row lock cannot be taken on a row that does not exist yet).
            satisfied = await conn.fetchval(
                "INSERT INTO flow_trigger_windows"
                " (namespace, flow_id, trigger_id, window_start, window_end)"
                " VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (namespace, flow_id, trigger_id, window_start)"
                " DO UPDATE SET updated_at = now()"
                " RETURNING satisfied",
                *key,
                window_start,
                window_end,
            )
            seen = await conn.fetchrow(
                "SELECT execution_id, window_start, upstreams FROM flow_trigger_ends"
                " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3"
                " AND upstream_end = $4",
                *key,
                upstream_end,
            )
            if seen is not None:
                firing = None
                if seen["execution_id"] is not None:
                    firing = Firing(seen["execution_id"], seen["window_start"], seen["upstreams"])
                return CountedEnd(again=True, firing=firing)
            change = decide(satisfied)
            await conn.execute(
                "UPDATE flow_trigger_windows SET satisfied = $5, updated_at = now()"
                " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3"
                " AND window_start = $4",
                *key,
                window_start,
                change.satisfied,
            )
            fired = change.firing
            await conn.execute(
                "INSERT INTO flow_trigger_ends"
                " (namespace, flow_id, trigger_id, upstream_end, window_start, execution_id,"
                " upstreams) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                *key,
                upstream_end,
                window_start,
                None if fired is None else fired.execution_id,
                None if fired is None else fired.upstreams,
            )
            return CountedEnd(again=False, firing=fired)

    async def forget_before(self, cutoff: datetime) -> None:
        """Drop windows closed before `cutoff` and ends counted before it."""
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM flow_trigger_windows WHERE window_end < $1", cutoff)
            await conn.execute("DELETE FROM flow_trigger_ends WHERE seen_at < $1", cutoff)

    async def window(self, key: TriggerKey, window_start: datetime) -> Json | None:
        """A window's stored progress (for tests and inspection)."""
        return await self._pool.fetchval(
            "SELECT satisfied FROM flow_trigger_windows"
            " WHERE namespace = $1 AND flow_id = $2 AND trigger_id = $3 AND window_start = $4",
            *key,
            window_start,
        )
