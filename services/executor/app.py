"""The executor as a Faust app: one agent over the co-partitioned input topics.

Inputs (`triggers`, `task-results`, `execution-commands`) are keyed by execution id and
have the same partition count as the state table's changelog, so the process that owns
partition N owns every execution hashed to N for its whole life. Add executor
processes and Faust rebalances partitions (and their table state) between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import faust
from mode import Service

from headrace import log_format as log_formats
from headrace.config import Settings
from headrace.core.state import StateVersionError
from headrace.flow_log import FlowLog
from headrace.readiness import mark_ready
from headrace.service_http import serving
from headrace.services.executor.batches import take_batches
from headrace.services.executor.consumer import install_consumers
from headrace.services.executor.faust_tuning import faust_settings
from headrace.services.executor.recovery import FencedTableManager
from headrace.services.executor.runtime import ExecutorRuntime, InputEvent, StateTable
from headrace.services.executor.store import DictStore, RocksStore, lock_folder
from headrace.services.executor.timer_index import RocksIndex, TimerIndex
from headrace.services.executor.together import TogetherProducer
from headrace.topics import EXECUTION_COMMANDS, FLOW_SLOTS, TASK_RESULTS, TRIGGERS
from headrace.topics.definitions import EXECUTION_STATE_CHANGELOG, FLOW_SLOTS_CHANGELOG

log = logging.getLogger(__name__)

APP_ID = "headrace-executor"
# Keyed by execution (or, for flow-slots, by flow); never compacted.
INPUT_TOPICS = (TRIGGERS.name, TASK_RESULTS.name, EXECUTION_COMMANDS.name, FLOW_SLOTS.name)
TABLE_NAME = "executions"
SLOTS_TABLE_NAME = "flow-slots"
# A batch closes after this many events, or BATCH_WITHIN_S after its first event.
# 2 ms bounds the latency a batch adds per hop while letting bursts share table reads.
BATCH_MAX = 1_000
BATCH_WITHIN_S = 0.002
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE
# A state written by a newer executor (rolling upgrade): this version must not touch it.
# Exit and let the supervisor restart us until an operator finishes the upgrade.
EXIT_NEWER_STATE = 78  # EX_CONFIG


class _Runtime:
    """Builds the I/O resources once, from whichever of agent or service asks first."""

    def __init__(self, app: faust.App, settings: Settings, table: Any, slots_table: Any) -> None:
        self.app = app
        self.settings = settings
        self.table = table
        self.slots_table = slots_table
        self._lock = asyncio.Lock()
        self.runtime: ExecutorRuntime | None = None
        self._flows: FlowLog | None = None
        self._timer_tasks: list[asyncio.Task[None]] = []

    async def get(self) -> ExecutorRuntime:
        async with self._lock:
            if self.runtime is None:
                # Flows come from the `flows` topic: the executor never reads PostgreSQL.
                self._flows = FlowLog(self.settings, APP_ID)
                await self._flows.start()
                runtime = ExecutorRuntime(
                    _state_table(self.table),
                    _state_table(self.slots_table),
                    self._flows,
                    TogetherProducer(self.app.producer),
                    retention=self.settings.execution_retention,
                    **self._timer_indexes(),
                )
                for queue in (runtime.timers, runtime.evictions):
                    task = asyncio.ensure_future(queue.run())
                    task.add_done_callback(_exit_if_timers_died)
                    self._timer_tasks.append(task)
                self.runtime = runtime
            return self.runtime

    def _timer_indexes(self) -> dict[str, TimerIndex]:
        """With the RocksDB store, pending timers wait on disk too (a million paused
        executions are a million timers); beside the tables, in this process's folder."""
        if not self.settings.executor_on_disk:
            return {}
        folder = self.settings.executor_data_path()
        return {
            "timer_index": RocksIndex(folder / "timers.db"),
            "eviction_index": RocksIndex(folder / "evictions.db"),
        }

    async def close(self) -> None:
        for task in self._timer_tasks:
            task.cancel()
        if self.runtime is not None:
            for index in (self.runtime.timer_index, self.runtime.eviction_index):
                if isinstance(index, RocksIndex):
                    index.close()
        if self._flows is not None:
            await self._flows.stop()


def _state_table(table: Any) -> StateTable:
    store = table.data if isinstance(table.data, RocksStore) else DictStore(table.data)
    return StateTable(store, table.changelog_topic.get_topic_name())


def _exit_if_timers_died(task: asyncio.Task[None]) -> None:
    """Without its timer loop the process would hold retries, timeouts and pause deadlines
    that never fire: exit so the supervisor restarts it and the timers are rebuilt."""
    if task.cancelled():
        return  # stopping
    log.critical("the timer loop stopped; exiting", exc_info=task.exception())
    os._exit(EXIT_BATCH_FAILED)


def _exit_on_newer_state() -> NoReturn:
    log.critical(
        "a stored execution has a newer format than this executor reads: finish the "
        "upgrade of every executor; exiting without touching it",
        exc_info=True,
    )
    os._exit(EXIT_NEWER_STATE)


class Started:
    """Whether the Faust worker finished its start (its consumer joined the group)."""

    def __init__(self) -> None:
        self.done = False


def create_app(settings: Settings, started: Started | None = None) -> faust.App:
    """`started`: what the worker sets once started, for `/readyz` (`service_http`)."""
    started = started or Started()
    install_consumers(INPUT_TOPICS, settings.fetch_wait)
    app = faust.App(
        APP_ID,
        broker=f"kafka://{settings.kafka_bootstrap}",
        # `headrace://` is RocksStore (store.py), found through our `faust.stores` entry point.
        store="headrace://" if settings.executor_on_disk else "memory://",
        # Faust makes its data folder in the working directory by default; the memory
        # store keeps nothing there, so it goes to the temp folder, not the user's repo.
        datadir=str(
            settings.executor_data_path()
            if settings.executor_on_disk
            else Path(tempfile.gettempdir()) / f"{APP_ID}-data"
        ),
        autodiscover=False,
        # Recovery reads each changelog to a fence it wrote, not to the broker's end offset.
        TableManager=FencedTableManager,
        # The table holds states as bytes (stored.py) under execution ids: no Faust codec.
        table_key_serializer="raw",
        table_value_serializer="raw",
        **faust_settings(settings),
    )
    inputs = app.topic(
        TRIGGERS.name,
        TASK_RESULTS.name,
        EXECUTION_COMMANDS.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    holder: _Runtime

    async def rebuild_timers() -> None:
        runtime = await holder.get()
        try:
            count = await runtime.rebuild_timers()
        except StateVersionError:
            _exit_on_newer_state()
        if count:
            log.info("recovered %d pending timers", count)

    table = app.Table(
        TABLE_NAME,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        on_recover=rebuild_timers,
        # Its records reach MAX_STATE_BYTES: the topic must take them (max.message.bytes).
        extra_topic_configs=EXECUTION_STATE_CHANGELOG.config(),
    )
    slot_requests = app.topic(
        FLOW_SLOTS.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Keyed by flow, partitioned like `flow-slots`: one owner per flow's slots.
    slots_table = app.Table(
        SLOTS_TABLE_NAME,
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        extra_topic_configs=FLOW_SLOTS_CHANGELOG.config(),
    )
    holder = _Runtime(app, settings, table, slots_table)

    @app.agent(inputs)
    async def execute(stream: faust.StreamT) -> None:
        runtime = await holder.get()
        async for events in take_batches(stream, BATCH_MAX, within=BATCH_WITHIN_S):
            try:
                await runtime.process_batch(
                    InputEvent(e.message.key, e.message.value, e.message.partition) for e in events
                )
            except StateVersionError:
                _exit_on_newer_state()
            except Exception:
                # Faust would ack the batch and restart the agent: the batch would be lost.
                # Exit instead; the supervisor restarts us and the batch is replayed from
                # the last committed offset (see runtime.py for why that is safe).
                log.critical("executor batch failed; exiting to replay it", exc_info=True)
                os._exit(EXIT_BATCH_FAILED)

    @app.agent(slot_requests)
    async def allocate_slots(stream: faust.StreamT) -> None:
        runtime = await holder.get()
        async for event in stream.events():
            try:
                await runtime.process_slot_request(
                    InputEvent(event.message.key, event.message.value, event.message.partition)
                )
            except Exception:
                log.critical("slot request failed; exiting to replay it", exc_info=True)
                os._exit(EXIT_BATCH_FAILED)

    @app.service
    class RuntimeService(Service):
        async def on_stop(self) -> None:
            await holder.close()

    @app.service
    class ProbesService(Service):
        """/metrics, /healthz and /readyz on HEADRACE_METRICS_PORT, when it is set."""

        _probes: contextlib.AsyncExitStack | None = None

        async def on_start(self) -> None:
            self._probes = contextlib.AsyncExitStack()
            await self._probes.enter_async_context(
                serving("executor", settings, lambda: started.done)
            )

        async def on_stop(self) -> None:
            if self._probes is not None:
                await self._probes.aclose()

    return app


class _Worker(faust.Worker):
    def __init__(self, app: faust.App, *, started: Started, log_format: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._startup = started
        self._log_format = log_format

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # Faust's terminal spinner sets the root logger to DEBUG so that it spins per log
        # record: every aiokafka send then builds a debug LogRecord (10% of executor CPU,
        # measured with py-spy), and it writes cursor escape codes into service logs.
        self.spinner = None
        # Faust installed its own handler and format: ours, as every service's.
        log_formats.reformat("executor", self._log_format)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._startup.done = True
        mark_ready()


def run_executor(settings: Settings, loglevel: str = "warning", log_format: str = "text") -> None:
    """Run the executor until SIGINT/SIGTERM (Faust's worker owns the event loop)."""
    # Held until the process exits: a second executor on the same folder is refused.
    folder_lock = lock_folder(settings.executor_data_path()) if settings.executor_on_disk else None
    started = Started()
    app = create_app(settings, started)
    worker = _Worker(app, started=started, log_format=log_format, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    del folder_lock
