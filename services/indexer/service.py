"""The indexer's loop: fetch a batch, write it in one transaction, then commit offsets.

At-least-once (docs/architecture.md, "Delivery"): offsets are committed only after the
transaction, so a crash replays the batch, and `headrace.db.indexing` makes a replay harmless. Undecodable
messages are logged and skipped, and so are messages PostgreSQL refuses to store (the
batch is then written message by message): one poison message must not stop the index.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

import asyncpg
from aiokafka import ConsumerRecord
from aiokafka.errors import CommitFailedError

from headrace.config import Settings
from headrace.consume import consume, decode
from headrace.db.indexing import DATA_ERRORS, Rejected, write_batch, write_each
from headrace.db.migrate import migrate
from headrace.db.pool import UNREACHABLE, create_pool
from headrace.kafka import make_consumer
from headrace.messages import ExecutionEvent, LogRecord
from headrace.topics.definitions import EXECUTIONS, LOGS

log = logging.getLogger(__name__)

GROUP_ID = "headrace-indexer"
# Back-off after PostgreSQL was unreachable, before the same batch is written again.
RETRY_DELAY_S = 1.0
# A refused value is logged this far: enough to find the message, not a megabyte line.
MAX_LOGGED_CHARS = 500


async def run_indexer(
    settings: Settings, stop: asyncio.Event, ready: Callable[[], None] | None = None
) -> None:
    """Index until `stop` is set; `ready()` is called once migrations ran and the
    consumer joined its group (partitions assigned)."""
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        consumer = make_consumer(
            settings,
            EXECUTIONS.name,
            LOGS.name,
            group_id=GROUP_ID,
            client_id=f"headrace-indexer-{socket.gethostname()}",
        )
        await consumer.start()  # returns once the group gave it its partitions

        async def index(records: list[ConsumerRecord]) -> None:
            started = time.perf_counter()
            events, logs = decode_batch(records)
            await _write_until_done(pool, events, logs, stop)
            log.debug(
                "indexed %d events and %d log lines in %.1f ms",
                len(events),
                len(logs),
                (time.perf_counter() - started) * 1000,
            )
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                # A rebalance took the partitions: their new owner replays, harmlessly.
                log.warning("offset commit failed after a rebalance: %s", exc)

        try:
            if ready is not None:
                ready()
            await consume(consumer, index, stop)
        finally:
            await consumer.stop()
    finally:
        await pool.close()


def decode_batch(records: list[ConsumerRecord]) -> tuple[list[ExecutionEvent], list[LogRecord]]:
    events: list[ExecutionEvent] = []
    logs: list[LogRecord] = []
    for record in records:
        message = decode(record)
        if message is None:
            continue
        if isinstance(message, ExecutionEvent):
            events.append(message)
        elif isinstance(message, LogRecord):
            logs.append(message)
        else:
            log.error("skipping unexpected %s on %s", type(message).__name__, record.topic)
    return events, logs


async def _write_until_done(
    pool: asyncpg.Pool, events: list[ExecutionEvent], logs: list[LogRecord], stop: asyncio.Event
) -> None:
    """Write the batch, retrying while PostgreSQL is unreachable (offsets wait meanwhile).

    When PostgreSQL refuses a value, the batch is written message by message and the
    refused messages are logged with their ids (the log is their dead letter).
    """
    while True:
        try:
            async with pool.acquire() as conn:
                try:
                    await write_batch(conn, events, logs)
                except DATA_ERRORS as exc:
                    log.warning("batch refused (%s), writing it message by message", _short(exc))
                    _, rejected = await write_each(conn, events, logs)
                    for item in rejected:
                        _log_rejected(item)
                except asyncpg.exceptions.InternalClientError:
                    conn.terminate()  # out of step with the server (db/pool.py): not reused
                    raise
            return
        except UNREACHABLE as exc:
            log.warning("PostgreSQL unavailable, retrying the batch: %s", exc)
            if stop.is_set():
                raise
            await asyncio.sleep(RETRY_DELAY_S)


def _log_rejected(item: Rejected) -> None:
    message = item.message
    if isinstance(message, ExecutionEvent):
        what = f"execution event {message.execution_id!r} seq {message.seq}"
        if message.task_runs:
            what += f" ({len(message.task_runs)} task runs, the first {message.task_runs[0].id!r})"
    else:
        what = f"log line of execution {message.execution_id!r}, id {message.id!r}"
    log.error("skipping %s, PostgreSQL refused it: %s", _short(what), _short(item.error))


def _short(value: object) -> str:
    # An id or an asyncpg argument error can be huge (that may be why it was refused).
    text = str(value)
    return text if len(text) <= MAX_LOGGED_CHARS else text[:MAX_LOGGED_CHARS] + "…"
