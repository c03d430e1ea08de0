"""The worker service: consumes `task-requests`, runs attempts concurrently, publishes results.

At-least-once (docs/architecture.md, "Delivery"): a request's offset is committed only once
its result and log lines were acknowledged by the broker, and per partition only up to the oldest attempt
still running (`OffsetTracker`). A worker that dies or is stopped mid-attempt leaves that
offset uncommitted, so the request is redelivered to the next owner of the partition.
Each run of an attempt has a random run id and is announced (a RUNNING `TaskResult`,
acknowledged before the task starts): the executor records a redelivered run as a new
entry of the attempt, kills a run of an attempt that is over, and ignores duplicate
results. The processes a run starts never outlive this worker (`reaper`).

Kafka failures while publishing are retried until they pass or the worker stops
(`AttemptPublisher`); they never become a task failure. A worker that cannot follow kills
stops with an error rather than silently ignoring them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from headrace import codec, metrics
from headrace.config import Settings
from headrace.connectors.base import Connector
from headrace.connectors.network_policy import NetworkPolicy
from headrace.connectors.registry import connector_classes
from headrace.consume import consume, decode
from headrace.errors import HeadraceError
from headrace.kafka import make_consumer, make_producer
from headrace.log_format import handling
from headrace.messages import LogRecord, TaskKill, TaskRequest, TaskResult
from headrace.services.worker.kills import KillListenerError, RecentKeys, follow_kills
from headrace.services.worker.offsets import OffsetTracker
from headrace.services.worker.publisher import AttemptPublisher, PublishAborted
from headrace.services.worker.reaper import Reaper
from headrace.services.worker.runner import PublishLog, new_run_nonce, run_attempt
from headrace.services.worker.sweeper import sweep_periodically
from headrace.states import State
from headrace.storage import Storage
from headrace.topics.definitions import LOGS, TASK_REQUESTS, TASK_RESULTS

log = logging.getLogger(__name__)

WORKER_GROUP = "headrace-workers"
# Seconds running attempts get to finish after a stop before they are cancelled (and
# redelivered elsewhere): most tasks end within it, a stuck one does not hold a deploy.
SHUTDOWN_GRACE_S = 10.0
# Seconds between offset commits: short, so a restart re-runs few finished attempts.
COMMIT_INTERVAL_S = 0.2
# How long one fetch waits for records (ms), hence how soon a stop is noticed.
POLL_TIMEOUT_MS = 100

AttemptKey = tuple[str, int]  # (task_run_id, attempt)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    # The connector's own task, cancelled by a kill (set once the attempt has started).
    connector: asyncio.Task[TaskResult] | None = None
    # Every fetched copy of this attempt's request: all are done when the attempt is.
    offsets: list[tuple[TopicPartition, int]] = field(default_factory=list)
    # Holds a concurrency slot until its connector returned; acks are awaited slot-free.
    busy: bool = True
    # This run's id: a redelivered request runs again elsewhere under another.
    run_id: str = field(default_factory=new_run_nonce)


class _CommitOnRevoke(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.commit(revoked)
        self._worker.tracker.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.joined.set()
        log.info("worker %s assigned %d partition(s)", self._worker.worker_id, len(assigned))


class Worker:
    """One worker process's consumer, producer and running attempts."""

    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        *,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        secrets: Mapping[str, str] | None = None,
        connectors: Mapping[str, type[Connector]] | None = None,
        on_attempt_end: Callable[[AttemptKey], None] | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.tracker = OffsetTracker()
        self._capacity = max(1, settings.worker_concurrency)
        self._grace_s = shutdown_grace_s
        self._secrets = dict(secrets or {})  # by name: resolved for tasks, all masked
        # Task type -> connector; None: the installed ones (the test kit passes its own).
        self._connectors = connectors
        # Called when the worker is done with an attempt: its lines and result
        # acknowledged by the broker, or given up (the test kit waits on it).
        self._on_attempt_end = on_attempt_end
        self._stop = asyncio.Event()  # replaced by the one `run` gets
        self._running: dict[AttemptKey, _Running] = {}
        self._kills = RecentKeys()
        # Attempts this worker ran to the end (their result acknowledged): a copy of their
        # request delivered again (at-least-once) must not run the task a second time.
        self._finished = RecentKeys()
        self.kills_followed = asyncio.Event()  # set once kills are being received
        self.joined = asyncio.Event()  # set once the group gave this worker its partitions
        self._ready: Callable[[], None] | None = None
        self._busy = 0  # attempts whose connector still runs: what the capacity bounds
        self._room = asyncio.Event()
        self._paused = False
        self._consumer = make_consumer(settings, group_id=WORKER_GROUP, client_id=worker_id)
        self._producer = make_producer(settings, client_id=worker_id)
        self.reaper = Reaper()
        self.storage = Storage(settings.storage_path())
        # Read at each scrape, nothing on the hot path (several workers in one process, as
        # in tests: the last one made).
        metrics.WORKER_SLOTS.set(self._capacity)
        metrics.WORKER_SLOTS_IN_USE.set_function(lambda: self._busy)

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Serve until `stop` is set; `ready()` is called once partitions are assigned and
        kills are followed. Raises `KillListenerError` if kills cannot be followed."""
        self._stop = stop
        self._ready = ready
        self._consumer.subscribe([TASK_REQUESTS.name], listener=_CommitOnRevoke(self))
        # Started before any task can be, stopped after the last one ended.
        self.reaper.start()
        try:
            await self._serve(stop)
        finally:
            await asyncio.to_thread(self.reaper.stop)

    async def _serve(self, stop: asyncio.Event) -> None:
        await self._producer.start()
        try:
            await self._consumer.start()
            try:
                log.info("worker %s started (concurrency %d)", self.worker_id, self._capacity)
                committer = asyncio.create_task(self._commit_periodically())
                sweeper = asyncio.create_task(
                    sweep_periodically(
                        self.storage,
                        self.settings.execution_retention,
                        label=f"worker {self.worker_id}",
                    ),
                    name="storage sweep",
                )
                kills = asyncio.create_task(self._follow_kills(stop))
                try:
                    await self._fetch_until(stop, kills)
                finally:
                    try:
                        await self._drain()
                    finally:
                        try:
                            await self._end_background(committer, kills, sweeper)
                        finally:
                            # Whatever failed above, finished attempts are not run twice.
                            await self.commit()
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()
            log.info("worker %s stopped", self.worker_id)

    async def _follow_kills(self, stop: asyncio.Event) -> None:
        await follow_kills(self.settings, self.worker_id, self.kill, stop, self.kills_followed)

    async def _end_background(self, *tasks: asyncio.Task[None]) -> None:
        for background in tasks:
            background.cancel()
            try:
                await background
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("worker %s: %s failed", self.worker_id, background.get_name())

    def _check_kills(self, kills: asyncio.Task[None]) -> None:
        """A worker deaf to kills would run killed attempts to their end, one without its
        reaper would leave them running if it crashed: fail loudly."""
        self.reaper.check()
        if not kills.done() or self._stop.is_set():
            return
        error = None if kills.cancelled() else kills.exception()
        if isinstance(error, HeadraceError):
            raise error
        raise KillListenerError(f"the kill listener stopped: {error!r}") from error

    def _check_ready(self) -> None:
        if self._ready is not None and self.joined.is_set() and self.kills_followed.is_set():
            ready, self._ready = self._ready, None
            log.info("worker %s ready", self.worker_id)
            ready()

    async def _fetch_until(self, stop: asyncio.Event, kills: asyncio.Task[None]) -> None:
        async def before_fetch() -> None:
            self._check_kills(kills)
            self._check_ready()
            if self._capacity - self._busy <= 0:
                await self._wait_for_room()
            if self._capacity - self._busy <= 0:
                # Full: partitions are paused, but polling keeps the group membership
                # alive (max.poll.interval) and returns only newly assigned partitions.
                self._pause()
            else:
                self._resume()

        async def dispatch(records: list[ConsumerRecord]) -> None:
            for record in records:
                self._dispatch(record)

        await consume(
            self._consumer,
            dispatch,
            stop,
            before_fetch=before_fetch,
            timeout_ms=lambda: 0 if self._paused else POLL_TIMEOUT_MS,
            max_records=lambda: 1 if self._paused else self._capacity - self._busy,
        )

    async def _wait_for_room(self) -> None:
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), POLL_TIMEOUT_MS / 1000)

    def _pause(self) -> None:
        self._consumer.pause(*self._consumer.assignment())
        self._paused = True

    def _resume(self) -> None:
        if self._paused:
            self._consumer.resume(*self._consumer.paused())
            self._paused = False

    def _dispatch(self, record: ConsumerRecord) -> None:
        partition, offset = TopicPartition(record.topic, record.partition), record.offset
        self.tracker.start(partition, offset)
        request = decode(record)  # None (logged) when undecodable
        if not isinstance(request, TaskRequest):
            if request is not None:
                log.error("skipping a %s on %s@%d", type(request).__name__, partition, offset)
            self.tracker.done(partition, offset)
            return
        key = (request.task_run_id, request.attempt)
        if key in self._finished:
            log.info("worker %s: %s attempt %d ran here already; not again", self.worker_id, *key)
            self.tracker.done(partition, offset)
            return
        running = self._running.get(key)
        if running is not None:
            # A redelivered copy of an attempt that is still running here: do not run it twice.
            running.offsets.append((partition, offset))
            return
        task = asyncio.create_task(self._attempt(request, key), name=f"attempt {key}")
        self._running[key] = _Running(task, offsets=[(partition, offset)])
        self._busy += 1

    def kill(self, kill: TaskKill) -> None:
        """Cancel the attempt (or only its run `kill.run_id`) if it runs here; refuse to
        start it if it comes later."""
        key = (kill.task_run_id, kill.attempt)
        running = self._running.get(key)
        if kill.run_id:
            self._kills.add((*key, kill.run_id))
            if running is None or running.run_id != kill.run_id:
                return  # another run of the attempt: a lost one elsewhere, or a re-run
        else:
            self._kills.add(key)
        if running is not None and running.connector is not None:
            running.connector.cancel()
            ids = {"execution_id": kill.execution_id, "task_run_id": kill.task_run_id}
            log.info("worker %s: killing %s attempt %d", self.worker_id, *key, extra=ids)

    def knows_killed(self, task_run_id: str, attempt: int, run_id: str = "") -> bool:
        key = (task_run_id, attempt)
        return key in self._kills or (bool(run_id) and (*key, run_id) in self._kills)

    def _release_slot(self, running: _Running) -> None:
        if running.busy:
            running.busy = False
            self._busy -= 1
            self._room.set()

    async def _attempt(self, request: TaskRequest, key: AttemptKey) -> None:
        # This task's log lines, and its connector's, carry the attempt's ids.
        with handling(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            task_id=request.task_id,
            attempt=request.attempt,
        ):
            await self._run_attempt(request, key)

    async def _run_attempt(self, request: TaskRequest, key: AttemptKey) -> None:
        publisher = AttemptPublisher(
            self._producer,
            request.execution_id.encode(),
            self._stop,
            label=f"worker {self.worker_id}: {key[0]} attempt {key[1]}",
        )

        async def publish_log(record: LogRecord) -> None:
            await publisher.send(LOGS.name, codec.encode(record))

        try:
            result = await self._run_unless_killed(request, key, publisher, publish_log)
            self._observe(request, result)
            await publisher.send(TASK_RESULTS.name, codec.encode(result))
            # Waiting for acks takes a broker round trip: let the next attempt start meanwhile.
            self._release_slot(self._running[key])
            await publisher.flush()
            self._finished.add(key)
            for partition, offset in self._running[key].offsets:
                self.tracker.done(partition, offset)
        except PublishAborted as exc:
            # Not acknowledged: leave the offset uncommitted so the request runs again.
            log.warning("%s; the request will be redelivered", exc)
        finally:
            self._release_slot(self._running.pop(key))
            if self._on_attempt_end is not None:
                self._on_attempt_end(key)

    def _observe(self, request: TaskRequest, result: TaskResult) -> None:
        known = connector_classes() if self._connectors is None else self._connectors
        metrics.TASK_ATTEMPT_SECONDS.labels(
            metrics.task_type_label(request.type, known), result.state.value
        ).observe((result.ended_at - result.started_at).total_seconds())

    async def _run_unless_killed(
        self,
        request: TaskRequest,
        key: AttemptKey,
        publisher: AttemptPublisher,
        publish_log: PublishLog,
    ) -> TaskResult:
        started_at = datetime.now(UTC)
        run_id = self._running[key].run_id
        if not self.knows_killed(*key, run_id):
            # The run is announced, and the broker has it, before the task runs: a re-run
            # after a crash shows as a new attempt entry, and a run of an attempt that is
            # over already is killed by the executor before it gets far.
            started = TaskResult(
                execution_id=request.execution_id,
                task_run_id=request.task_run_id,
                attempt=request.attempt,
                state=State.RUNNING,
                started_at=started_at,
                ended_at=started_at,
                worker_id=self.worker_id,
                run_id=run_id,
            )
            await publisher.send(TASK_RESULTS.name, codec.encode(started))
            await publisher.flush()
        if not self.knows_killed(*key, run_id):
            connector = asyncio.create_task(
                run_attempt(
                    request,
                    worker_id=self.worker_id,
                    publish_log=publish_log,
                    secrets=self._secrets,
                    connectors=self._connectors,
                    run_nonce=run_id,
                    process_guard=self.reaper,
                    default_timeout=self.settings.worker_task_timeout,
                    storage=self.storage,
                )
            )
            self._running[key].connector = connector
            try:
                return await connector
            except asyncio.CancelledError:
                if not self.knows_killed(*key, run_id) or asyncio.current_task().cancelling():
                    raise  # a shutdown, not a kill: the request will be redelivered
        return TaskResult(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            attempt=request.attempt,
            state=State.KILLED,
            started_at=started_at,
            ended_at=datetime.now(UTC),
            error="killed",
            worker_id=self.worker_id,
            run_id=run_id,
        )

    async def _drain(self) -> None:
        """Give running attempts the grace period, then cancel the rest (redelivered later)."""
        tasks = [running.task for running in self._running.values()]
        if not tasks:
            return
        current = asyncio.current_task()
        grace = 0.0 if current is not None and current.cancelling() else self._grace_s
        log.info(
            "worker %s: waiting up to %ss for %d attempt(s)", self.worker_id, grace, len(tasks)
        )
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self.commit()

    async def commit(self, partitions: set[TopicPartition] | None = None) -> None:
        positions = self.tracker.committable(partitions)
        if not positions:
            return
        try:
            await self._consumer.commit(positions)
        except KafkaError as exc:
            # Retried at the next tick; if the partition moved, its next owner redelivers.
            log.warning("worker %s: offset commit failed: %r", self.worker_id, exc)
            return
        self.tracker.mark_committed(positions)


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    worker_id: str | None = None,
    *,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ready: Callable[[], None] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> None:
    """Run a worker until `stop` is set, then shut down cleanly (see `Worker`).

    `ready()` is called once, when the worker has joined the group, got its partitions and
    follows kills (a readiness probe: before that, requests would wait). `secrets`: by
    name, what `{{ secret('NAME') }}` resolves to (see `headrace.sealed_env`).
    """
    NetworkPolicy.from_environment()  # an unreadable HEADRACE_HTTP_DENY: stop now, saying so
    worker = Worker(
        settings,
        worker_id or default_worker_id(),
        shutdown_grace_s=shutdown_grace_s,
        secrets=secrets,
    )
    await worker.run(stop, ready)
