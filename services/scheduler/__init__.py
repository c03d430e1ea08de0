"""The scheduler: publishes trigger events for cron schedules, flow-completion and Kafka
triggers (issue "Triggers and ingress"). For now it only holds its place in the
deployment and checks that it can reach the broker, so that compose files and
`headrace server local` already have their final shape.
"""

from __future__ import annotations

import asyncio
import logging

from headrace.config import Settings
from headrace.kafka import make_producer

log = logging.getLogger(__name__)


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    producer = make_producer(settings, "headrace-scheduler")
    await producer.start()
    try:
        log.info("scheduler up: no trigger types are scheduled yet")
        await stop.wait()
    finally:
        await producer.stop()
