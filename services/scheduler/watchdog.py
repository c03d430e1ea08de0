"""The watchdog: finds executions that can no longer make progress, as Airflow finds zombies.

Every pass, it picks from the index the unended executions that have not changed for a
while and sends each a PROBE on `execution-commands`. The executor that owns it answers
(on `executions`, written by the indexer into `executions.stuck_reason`): nothing wrong
(a worker, a timer, a resume or a slot will move it), stuck (its state says nothing can:
the reason says why), or lost (it holds no state for it at all). A probe also makes the
executor publish the execution again when the index shows another state, so an index
that missed an event catches up. Any later change of the execution clears the finding.

Stuck executions are listed by `GET /api/v1/executions?stuck=true` and counted by the
gateway's `/metrics` (`headrace_executions_stuck`). Probes are spaced out with the
execution's age (a paused execution waiting for a week is asked every hour, not every
minute) and claimed with `FOR UPDATE SKIP LOCKED`, so several schedulers share the work.
A probe still unanswered when the next is due is reported too: the executor owning the
execution does not answer (down, or its partition wedged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from headrace import codec
from headrace.ids import base62
from headrace.messages import CommandKind, ExecutionCommand
from headrace.topics import EXECUTION_COMMANDS

log = logging.getLogger(__name__)

# Probes per pass: a pass stays short; a backlog is worked off over the next passes.
MAX_PROBES_PER_PASS = 1_000
# An execution is asked again after a quarter of its quiet time, within these bounds.
MIN_RECHECK = timedelta(minutes=1)
MAX_RECHECK = timedelta(hours=1)
# Answers of operators' commands are kept this long (the gateway needs them for seconds).
ANSWERS_KEPT = timedelta(days=7)

# Literal, not a parameter: the partial indexes' predicate (migration 0005) must match.
_UNENDED = "state NOT IN ('SUCCESS', 'WARNING', 'FAILED', 'KILLED', 'CANCELLED', 'SKIPPED')"
_DUE_AGAIN = "$1::timestamptz + GREATEST($2::interval, LEAST(($1::timestamptz - updated_at) / 4, $3::interval))"

# Two scans, half the pass each (the other half when one has less): executions quiet since
# they changed and never probed since, oldest change first; and those whose next probe is
# due, earliest first. Neither can starve the other. A probe still unanswered when the
# next one is due is itself a finding: the executor owning the execution does not answer.
_CLAIM_UNPROBED = f"""
UPDATE executions SET probed_at = $1::timestamptz, next_probe_at = {_DUE_AGAIN}
WHERE id IN (
    SELECT id FROM executions
    WHERE next_probe_at IS NULL AND {_UNENDED} AND updated_at < $1::timestamptz - $4::interval
    ORDER BY updated_at
    LIMIT $5
    FOR UPDATE SKIP LOCKED)
RETURNING id, state
"""
_CLAIM_DUE = f"""
UPDATE executions SET probed_at = $1::timestamptz, next_probe_at = {_DUE_AGAIN},
    stuck_reason = CASE
        WHEN checked_at IS NULL OR checked_at < probed_at
        THEN 'no answer from its executor to the probe sent at ' || probed_at::text
        ELSE stuck_reason END
WHERE id IN (
    SELECT id FROM executions
    WHERE {_UNENDED} AND next_probe_at <= $1::timestamptz
    ORDER BY next_probe_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED)
RETURNING id, state
"""


@dataclass(frozen=True, slots=True)
class WatchdogSettings:
    interval: timedelta  # between passes
    quiet: timedelta  # how long an execution goes unchanged before it is probed


class Watchdog:
    def __init__(
        self, pool: asyncpg.Pool, producer: AIOKafkaProducer, settings: WatchdogSettings
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._settings = settings

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                probed = await self.probe_once(datetime.now(UTC))
                if probed:
                    log.info("watchdog: probed %d quiet execution(s)", probed)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as exc:
                log.warning("watchdog pass failed, trying again next pass: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.interval.total_seconds())

    async def probe_once(self, now: datetime) -> int:
        """Claim the executions due for a probe and send them one; returns how many."""
        half = MAX_PROBES_PER_PASS // 2
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                _CLAIM_UNPROBED, now, MIN_RECHECK, MAX_RECHECK, self._settings.quiet, half
            )
            rows += await conn.fetch(
                _CLAIM_DUE, now, MIN_RECHECK, MAX_RECHECK, MAX_PROBES_PER_PASS - len(rows)
            )
            await conn.execute(
                "DELETE FROM execution_commands WHERE answered_at < $1", now - ANSWERS_KEPT
            )
        sent = []
        for row in rows:
            probe = ExecutionCommand(
                command_id=f"probe:{row['id']}:{base62(int(now.timestamp() * 1_000_000))}",
                execution_id=row["id"],
                kind=CommandKind.PROBE,
                time=now,
                payload={"indexState": row["state"]},
            )
            value = codec.encode(probe)
            sent.append(
                await self._producer.send(
                    EXECUTION_COMMANDS.name, value, key=probe.execution_id.encode()
                )
            )
        if sent:
            await asyncio.gather(*sent)
        return len(rows)
