"""What every handler needs, built once per gateway and stored on the application."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer

from headrace.db.executions import ExecutionRepository
from headrace.db.logs import LogRepository
from headrace.flow_log import FlowLog
from headrace.flow_store import FlowStore
from headrace.services.gateway.flow_loading import FlowLoader
from headrace.services.gateway.waiter import ExecutionWaiter
from headrace.storage import Storage

if TYPE_CHECKING:  # follow.py reads the Gateway: imported for annotations only
    from headrace.services.gateway.follow import ChangeFeed


@dataclass
class Gateway:
    pool: asyncpg.Pool
    producer: AIOKafkaProducer
    # Flows as the gateway serves and changes them: through the `flows` topic.
    flows: FlowStore
    executions: ExecutionRepository
    logs: LogRepository
    waiter: ExecutionWaiter
    # Flows and trigger switches as the `flows` topic has them: starts need no database.
    flow_log: FlowLog
    # The file storage the workers share (headrace/storage.py): downloads, namespace files.
    storage: Storage | None = None
    # Wakes live followers of executions (services/gateway/follow.py).
    changes: ChangeFeed | None = None
    producer_started: bool = False
    # Parses and validates YAML off the event loop (its pool starts on first use).
    flow_loader: FlowLoader = field(default_factory=FlowLoader)


GATEWAY = web.AppKey("gateway", Gateway)


def gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]
