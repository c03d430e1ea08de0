"""The scheduler: turns schedule, flow-completion and Kafka triggers into trigger events,
and runs the watchdog that probes quiet executions (`watchdog`).

It only publishes `TriggerEvent`s on `triggers`, each with an execution id derived from
what fired (flow, trigger, tick or upstream execution or message): a tick published
twice — by a restarted scheduler or by two schedulers at once — is the same execution,
and the executor ignores the second. Webhook triggers are served by the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from headrace.config import Settings
from headrace.db.flow_windows import FlowWindowRepository
from headrace.db.flows import FlowIndex
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.db.triggers import TriggerStateRepository
from headrace.flow_log import FlowLog, publish_stored
from headrace.kafka import make_producer
from headrace.services.scheduler.catalog import TriggerCatalog
from headrace.services.scheduler.flow_triggers import FlowTriggers
from headrace.services.scheduler.kafka_triggers import KafkaTriggers
from headrace.services.scheduler.schedules import ScheduleRunner
from headrace.services.scheduler.stop_after import TriggerStops
from headrace.services.scheduler.watchdog import Watchdog, WatchdogSettings


async def run_scheduler(
    settings: Settings, stop: asyncio.Event, ready: Callable[[], None] | None = None
) -> None:
    pool = await create_pool(settings.database_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        await migrate(pool)
        producer = make_producer(settings, "headrace-scheduler")
        await producer.start()
        stack.push_async_callback(producer.stop)
        flow_log = FlowLog(settings, "headrace-scheduler")
        await flow_log.start()
        stack.push_async_callback(flow_log.stop)
        states = TriggerStateRepository(pool)
        await publish_stored(FlowIndex(pool), states, flow_log)
        catalog = TriggerCatalog(flow_log)
        catalog.refresh()
        stops = TriggerStops(states, producer, flow_log)
        flow_triggers = FlowTriggers(settings, producer, catalog, FlowWindowRepository(pool), stops)
        await flow_triggers.start()  # joined before ready: no execution end is missed
        stack.push_async_callback(flow_triggers.close)
        kafka_triggers = KafkaTriggers(settings, producer, catalog)
        components = [
            catalog.run(stop),
            flow_triggers.run(stop),
            kafka_triggers.run(stop),
            _follow(flow_log),
        ]
        schedules = ScheduleRunner(catalog, states, producer)
        components.append(schedules.run(stop))
        watchdog = Watchdog(
            pool,
            producer,
            WatchdogSettings(
                interval=timedelta(seconds=settings.watchdog_interval_s),
                quiet=timedelta(seconds=settings.watchdog_quiet_s),
            ),
        )
        components.append(watchdog.run(stop))
        tasks = [asyncio.create_task(component) for component in components]
        stopped = asyncio.create_task(stop.wait())
        if ready is not None:
            ready()
        try:
            await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [stopped, *tasks]:
                task.cancel()
            await asyncio.gather(stopped, *tasks, return_exceptions=True)
        # A component that ended before `stop` died: exit with its error rather than run
        # on without it (server local and container restarts bring a whole one back).
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not stop.is_set():
            raise RuntimeError("a scheduler component stopped on its own")


async def _follow(flow_log: FlowLog) -> None:
    """Ends when the log's reader does: the catalog would otherwise go stale for good.
    (Waited on, not awaited: cancelling this must not cancel the reader.)"""
    await asyncio.wait({flow_log.following})
    raise RuntimeError("the scheduler stopped reading the flows topic")
