"""The scheduler: turns schedule, flow-completion and Kafka triggers into trigger events.

It only publishes `TriggerEvent`s on `triggers`, each with an execution id derived from
what fired (flow, trigger, tick or upstream execution or message): a tick published
twice — by a restarted scheduler or by two schedulers at once — is the same execution,
and the executor ignores the second. Webhook triggers are served by the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from headrace.config import Settings
from headrace.db.flows import FlowRepository
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.db.triggers import TriggerStateRepository
from headrace.kafka import make_producer
from headrace.services.scheduler.catalog import TriggerCatalog
from headrace.services.scheduler.flow_triggers import FlowTriggers
from headrace.services.scheduler.kafka_triggers import KafkaTriggers
from headrace.services.scheduler.schedules import ScheduleRunner


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
        catalog = TriggerCatalog(FlowRepository(pool))
        await catalog.refresh()
        flow_triggers = FlowTriggers(settings, producer, catalog)
        await flow_triggers.start()  # joined before ready: no execution end is missed
        stack.push_async_callback(flow_triggers.close)
        kafka_triggers = KafkaTriggers(settings, producer, catalog)
        components = [catalog.run(stop), flow_triggers.run(stop), kafka_triggers.run(stop)]
        schedules = ScheduleRunner(catalog, TriggerStateRepository(pool), producer)
        components.append(schedules.run(stop))
        tasks = [asyncio.create_task(component) for component in components]
        if ready is not None:
            ready()
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
