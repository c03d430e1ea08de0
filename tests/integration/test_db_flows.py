"""FlowRepository: revisions as a user sees them through PUT / GET / DELETE."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from headrace.db.flows import FlowExistsError, FlowRepository
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=12)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture
def namespace() -> str:
    return f"test.flows{uuid.uuid4().hex[:8]}"


async def test_same_source_twice_is_one_revision(pool: asyncpg.Pool, namespace: str) -> None:
    repo = FlowRepository(pool)
    assert await repo.save(namespace, "f", "id: f\n") == (1, True)
    assert await repo.save(namespace, "f", "id: f\n") == (1, False)
    assert await repo.save(namespace, "f", "id: f\n# changed\n") == (2, True)
    latest = await repo.get(namespace, "f")
    assert latest is not None and latest.revision == 2
    first = await repo.get(namespace, "f", 1)
    assert first is not None and first.source == "id: f\n"
    assert await repo.get(namespace, "f", 3) is None


async def test_concurrent_saves_get_distinct_revisions(pool: asyncpg.Pool, namespace: str) -> None:
    repo = FlowRepository(pool)
    results = await asyncio.gather(*(repo.save(namespace, "f", f"v{i}") for i in range(10)))
    assert sorted(r.revision for r in results) == list(range(1, 11))
    assert all(r.created for r in results)
    assert await repo.revisions(namespace, "f") == list(range(1, 11))


async def test_create_refuses_an_existing_flow(pool: asyncpg.Pool, namespace: str) -> None:
    repo = FlowRepository(pool)
    assert await repo.create(namespace, "f", "a") == 1
    with pytest.raises(FlowExistsError):
        await repo.create(namespace, "f", "b")


async def test_delete_writes_a_tombstone(pool: asyncpg.Pool, namespace: str) -> None:
    repo = FlowRepository(pool)
    await repo.save(namespace, "f", "a")
    assert await repo.delete(namespace, "f") is True
    assert await repo.get(namespace, "f") is None
    assert await repo.get(namespace, "f", 2) is None  # the tombstone itself
    old = await repo.get(namespace, "f", 1)  # executions still running it can load it
    assert old is not None and old.source == "a"
    assert await repo.delete(namespace, "f") is False
    assert [f.id for f in await repo.list(namespace)] == []
    # Saving the same source again brings the flow back as a new revision.
    assert await repo.save(namespace, "f", "a") == (3, True)
    assert await repo.create(namespace, "g", "g") == 1


async def test_list_gives_the_latest_live_revision_per_flow(
    pool: asyncpg.Pool, namespace: str
) -> None:
    repo = FlowRepository(pool)
    await repo.save(namespace, "a", "a1")
    await repo.save(namespace, "a", "a2")
    await repo.save(f"{namespace}.sub", "b", "b1")
    await repo.save(f"{namespace}x", "c", "c1")  # a sibling, not a sub-namespace
    await repo.save(namespace, "gone", "g")
    await repo.delete(namespace, "gone")
    listed = [(f.namespace, f.id, f.revision, f.source) for f in await repo.list(namespace)]
    assert listed == [(namespace, "a", 2, "a2"), (f"{namespace}.sub", "b", 1, "b1")]
