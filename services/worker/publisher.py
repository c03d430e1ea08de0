"""Publishes one attempt's log lines and result, riding out Kafka failures.

A failed send is the infrastructure's fault, never the task's: it is retried with backoff
(`BACKOFF_INITIAL_S` doubling to `BACKOFF_MAX_S`) until the broker acknowledges it or the
worker stops. Then `PublishAborted` is raised and the worker leaves the request's offset
uncommitted, so the next owner of the partition runs the attempt again. Acknowledgements
are awaited every `FLUSH_EVERY_SENDS` sends: the pending futures stay bounded however
much an attempt logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from headrace.errors import HeadraceError

log = logging.getLogger(__name__)

# Seconds before the first retry of a failed send, doubled per failure up to the maximum:
# quick through a leader election, gentle on a broker that is down for minutes.
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
# Sends whose acknowledgements may be pending at once (a few hundred log lines): awaiting
# them costs one round trip per batch, and memory stays bounded.
FLUSH_EVERY_SENDS = 256

_Pending = tuple[str, bytes, asyncio.Future]


class PublishAborted(HeadraceError):
    """The worker stopped while a publish kept failing: the attempt ends without a result."""


class AttemptPublisher:
    """Sends messages keyed by one execution id; `flush` waits until all are acknowledged."""

    def __init__(
        self, producer: AIOKafkaProducer, key: bytes, stop: asyncio.Event, label: str
    ) -> None:
        self._producer = producer
        self._key = key
        self._stop = stop
        self._label = label  # names the attempt in the worker's log
        self._pending: list[_Pending] = []

    @property
    def pending_count(self) -> int:
        """Sends not yet known to be acknowledged."""
        return len(self._pending)

    async def send(self, topic: str, value: bytes) -> None:
        """Queue `value`; waits for earlier acknowledgements every `FLUSH_EVERY_SENDS`."""
        self._pending.append((topic, value, await self._enqueue(topic, value)))
        if len(self._pending) >= FLUSH_EVERY_SENDS:
            await self.flush()

    async def flush(self) -> None:
        """Return once every message sent so far is acknowledged, resending failed ones."""
        delay = BACKOFF_INITIAL_S
        while self._pending:
            batch, self._pending = self._pending, []
            failed: list[tuple[str, bytes]] = []
            error: KafkaError | None = None
            for topic, value, delivery in batch:
                try:
                    await delivery
                except KafkaError as exc:
                    failed.append((topic, value))
                    error = exc
            if error is None:
                return
            await self._pause_or_abort(delay, error, len(failed))
            delay = min(delay * 2, BACKOFF_MAX_S)
            for topic, value in failed:
                self._pending.append((topic, value, await self._enqueue(topic, value)))

    async def _enqueue(self, topic: str, value: bytes) -> asyncio.Future:
        delay = BACKOFF_INITIAL_S
        while True:
            try:
                return await self._producer.send(topic, value, key=self._key)
            except KafkaError as exc:
                await self._pause_or_abort(delay, exc, 1)
                delay = min(delay * 2, BACKOFF_MAX_S)

    async def _pause_or_abort(self, delay: float, error: KafkaError, count: int) -> None:
        if not self._stop.is_set():
            log.warning(
                "%s: %d message(s) not published (%r); retrying in %.1f s",
                self._label,
                count,
                error,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        if self._stop.is_set():
            raise PublishAborted(
                f"{self._label}: {count} message(s) not published before the worker stopped"
                f" ({error!r})"
            ) from error
