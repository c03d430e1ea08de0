"""The gateway's copy of the `flows` topic into PostgreSQL's `flows` table."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from headrace import codec
from headrace.db.flows import FlowIndex
from headrace.flow_log import FlowLog, publish_missing
from headrace.flow_store import FlowStore
from headrace.messages import FlowRevision
from headrace.services.gateway.flows_index import index_flows
from headrace.topics.definitions import FLOWS

DEADLINE_S = 20.0


@pytest.fixture
def namespace() -> str:
    return f"test.flowindex{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def indexing(flow_log: FlowLog, migrated_pool: asyncpg.Pool) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(index_flows(flow_log, FlowIndex(migrated_pool), stop))
    yield
    stop.set()
    await asyncio.wait_for(task, DEADLINE_S)  # ends cleanly, raising nothing


async def rows(pool: asyncpg.Pool, namespace: str) -> list[tuple]:
    records = await pool.fetch(
        "SELECT id, revision, source, deleted, created_at, xmin::text::bigint AS version"
        " FROM flows WHERE namespace = $1 ORDER BY id, revision",
        namespace,
    )
    return [tuple(r) for r in records]


async def until_rows(pool: asyncpg.Pool, namespace: str, count: int) -> list[tuple]:
    async with asyncio.timeout(DEADLINE_S):
        while len(found := await rows(pool, namespace)) != count:
            await asyncio.sleep(0.02)
    return found


async def test_every_revision_the_topic_decides_reaches_the_table(
    flow_log: FlowLog, migrated_pool: asyncpg.Pool, indexing: None, namespace: str
) -> None:
    store = FlowStore(flow_log)
    await store.save(namespace, "f", "one")
    await store.save(namespace, "f", "two")
    await store.delete(namespace, "f")
    found = await until_rows(migrated_pool, namespace, 3)
    expected = [flow_log.revision(namespace, "f", n) for n in (1, 2, 3)]
    assert [row[:5] for row in found] == [
        (r.flow_id, r.revision, r.source, r.deleted, r.created_at) for r in expected if r
    ]
    assert [row[3] for row in found] == [False, False, True]


async def test_writing_a_revision_again_rewrites_nothing(
    flow_log: FlowLog, migrated_pool: asyncpg.Pool, indexing: None, namespace: str
) -> None:
    """A restarted gateway (or a second one) writes every revision again: rows that hold
    it already are left as they are (no new row version, no dead tuple)."""
    await FlowStore(flow_log).save(namespace, "f", "one")
    before = await until_rows(migrated_pool, namespace, 1)
    (revision,) = [r for r in flow_log.revisions() if r.namespace == namespace]
    index = FlowIndex(migrated_pool)
    await index.write([revision], [])
    assert await rows(migrated_pool, namespace) == before
    # A revision republished with another source (see headrace.flow_log) is rewritten.
    await index.write([replace(revision, source="other")], [])
    (after,) = await rows(migrated_pool, namespace)
    assert after[2] == "other" and after[5] != before[0][5]


async def test_a_retracted_revision_leaves_the_table(
    flows_producer: AIOKafkaProducer,
    flow_log: FlowLog,
    migrated_pool: asyncpg.Pool,
    indexing: None,
    namespace: str,
) -> None:
    """Retractions come from a release that stored flows in PostgreSQL first."""
    retracted = FlowRevision(namespace, "f", 1, "never", datetime.now(UTC))
    key = retracted.key.encode()
    await flows_producer.send_and_wait(FLOWS.name, codec.encode(retracted), key=key)
    await until_rows(migrated_pool, namespace, 1)
    await flows_producer.send_and_wait(FLOWS.name, None, key=key)
    await until_rows(migrated_pool, namespace, 0)


async def test_a_revision_postgresql_refuses_is_logged_and_the_others_written(
    flow_log: FlowLog,
    migrated_pool: asyncpg.Pool,
    indexing: None,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlowStore(flow_log)
    with caplog.at_level(logging.ERROR, "headrace.services.gateway.flows_index"):
        await store.save(namespace, "bad", "a NUL \x00 PostgreSQL's text cannot hold")
        await store.save(namespace, "good", "fine")
        (row,) = await until_rows(migrated_pool, namespace, 1)
    assert row[:3] == ("good", 1, "fine")
    assert f"skipping flow revision {namespace}/bad@1" in caplog.text


async def test_a_revision_retracted_while_no_gateway_ran_leaves_the_table(
    flows_producer: AIOKafkaProducer,
    flow_log: FlowLog,
    migrated_pool: asyncpg.Pool,
    namespace: str,
) -> None:
    """The row a gateway wrote before it stopped, of a revision retracted meanwhile: the
    next one deletes it, though it never wrote it (and its start-up has nothing to
    publish again)."""
    index = FlowIndex(migrated_pool)
    retracted = FlowRevision(namespace, "f", 1, "never", datetime.now(UTC))
    key = retracted.key.encode()
    await flows_producer.send_and_wait(FLOWS.name, codec.encode(retracted), key=key)
    await index.write([retracted], [])  # what the earlier gateway wrote
    await flows_producer.send_and_wait(FLOWS.name, None, key=key)
    await flow_log.sync()
    stored = [r for r in await index.all_revisions() if r.namespace == namespace]
    assert stored and await publish_missing(flow_log, stored, []) == 0

    stop = asyncio.Event()
    task = asyncio.create_task(index_flows(flow_log, index, stop))
    try:
        await until_rows(migrated_pool, namespace, 0)
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)
