"""Fixtures of the integration tests that read and write the `flows` topic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from headrace.config import Settings
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.flow_log import FlowLog
from headrace.kafka import make_producer
from tests.integration.stacks import reading_flows


@pytest.fixture(scope="module")
async def migrated_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def flows_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = make_producer(settings, "test-flows")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def flow_log(settings: Settings) -> AsyncIterator[FlowLog]:
    async with reading_flows(settings, "test-flows") as flow_log:
        yield flow_log
