"""Flows as users change them through PUT / POST / DELETE: the `flows` topic decides each
revision, and every reader of it (other gateways, executors, schedulers, the indexer)
numbers them alike. No PostgreSQL takes part."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from headrace.config import Settings
from headrace.flow_log import FlowChangeUnsettled, FlowLog
from headrace.flow_store import FlowExistsError, FlowStore, FlowsUnavailable
from headrace.messages import FlowChangeAction
from headrace.topics.definitions import MAX_MESSAGE_BYTES
from tests.integration.stacks import reading_flows


@pytest.fixture
def namespace() -> str:
    return f"test.flows{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(flow_log: FlowLog) -> FlowStore:
    return FlowStore(flow_log)


@pytest.fixture
async def other_log(settings: Settings) -> AsyncIterator[FlowLog]:
    """A second gateway's reader of the same topic."""
    async with reading_flows(settings, "test-flows-other") as flow_log:
        yield flow_log


@pytest.fixture
def other_gateway(other_log: FlowLog) -> FlowStore:
    return FlowStore(other_log)


async def test_same_source_twice_is_one_revision(store: FlowStore, namespace: str) -> None:
    assert await store.save(namespace, "f", "id: f\n") == (1, True)
    assert await store.save(namespace, "f", "id: f\n") == (1, False)
    assert await store.save(namespace, "f", "id: f\n# changed\n") == (2, True)
    latest = store.get(namespace, "f")
    assert latest is not None and latest.revision == 2
    first = store.get(namespace, "f", 1)
    assert first is not None and first.source == "id: f\n"
    assert store.get(namespace, "f", 3) is None


async def test_concurrent_saves_through_two_gateways_get_distinct_consecutive_revisions(
    store: FlowStore,
    other_gateway: FlowStore,
    flow_log: FlowLog,
    other_log: FlowLog,
    settings: Settings,
    namespace: str,
) -> None:
    saves = [(store if i % 2 else other_gateway).save(namespace, "f", f"v{i}") for i in range(10)]
    results = await asyncio.gather(*saves)
    assert sorted(r.revision for r in results) == list(range(1, 11))
    assert all(r.created for r in results)

    # A reader started afterwards numbers them as both writers did, from the topic alone.
    async with reading_flows(settings, "test-flows-late") as late:
        await flow_log.sync()
        await other_log.sync()
        for number in range(1, 11):
            revision = late.revision(namespace, "f", number)
            assert revision is not None
            assert revision == store.get(namespace, "f", number)
            assert revision == other_gateway.get(namespace, "f", number)
        numbers = sorted(r.revision for r in late.revisions() if r.namespace == namespace)
        assert numbers == list(range(1, 11))


async def test_of_two_creates_sent_at_once_the_first_on_the_topic_wins(
    store: FlowStore,
    other_gateway: FlowStore,
    flow_log: FlowLog,
    other_log: FlowLog,
    namespace: str,
) -> None:
    """Both gateways found no flow and sent their create (`FlowLog.change`, as
    `FlowStore.create` does then): each reader refuses the second by the same rule."""
    mine, theirs = await asyncio.gather(
        flow_log.change(namespace, "f", FlowChangeAction.CREATE, "mine", 10),
        other_log.change(namespace, "f", FlowChangeAction.CREATE, "theirs", 10),
    )
    assert sorted([mine[:2], theirs[:2]]) == [(1, False), (1, True)]  # (revision, written)
    winner = "mine" if mine.written else "theirs"
    await other_log.sync()
    for gateway in (store, other_gateway):
        latest = gateway.get(namespace, "f")
        assert latest is not None and (latest.revision, latest.source) == (1, winner)
    with pytest.raises(FlowExistsError):
        await store.create(namespace, "f", "again")


async def test_delete_writes_a_tombstone(store: FlowStore, namespace: str) -> None:
    await store.save(namespace, "f", "a")
    assert await store.delete(namespace, "f") is True
    assert store.get(namespace, "f") is None
    assert store.get(namespace, "f", 2) is None  # the tombstone itself
    old = store.get(namespace, "f", 1)  # executions still running it can load it
    assert old is not None and old.source == "a"
    assert await store.delete(namespace, "f") is False
    assert store.list(namespace) == []
    # Saving the same source again brings the flow back as a new revision.
    assert await store.save(namespace, "f", "a") == (3, True)
    assert await store.create(namespace, "g", "g") == 1
    assert await store.delete(namespace, "never") is False


async def test_list_gives_the_latest_live_revision_per_flow(
    store: FlowStore, namespace: str
) -> None:
    await store.save(namespace, "a", "a1")
    await store.save(namespace, "a", "a2")
    await store.save(f"{namespace}.sub", "b", "b1")
    await store.save(f"{namespace}x", "c", "c1")  # a sibling, not a sub-namespace
    await store.save(namespace, "gone", "g")
    await store.delete(namespace, "gone")
    listed = [(f.namespace, f.flow_id, f.revision, f.source) for f in store.list(namespace)]
    assert listed == [(namespace, "a", 2, "a2"), (f"{namespace}.sub", "b", 1, "b1")]
    first, total = store.page(namespace, page=1, size=1)
    second, _ = store.page(namespace, page=2, size=1)
    assert total == 2 and [first[0].flow_id, second[0].flow_id] == ["a", "b"]
    assert store.page(namespace, page=3, size=1) == ([], 2)


async def test_a_change_the_producer_refuses_changes_nothing(
    store: FlowStore, namespace: str
) -> None:
    too_large = "#" * (MAX_MESSAGE_BYTES + 1)
    with pytest.raises(FlowsUnavailable, match="was not sent \\(nothing was changed\\)"):
        await store.save(namespace, "f", too_large)
    assert await store.find(namespace, "f") is None  # found nowhere, up to date


async def test_a_change_not_read_back_in_time_is_said_to_be_maybe_applied(
    flow_log: FlowLog, namespace: str
) -> None:
    with pytest.raises(FlowChangeUnsettled, match="was sent, but not acknowledged"):
        await flow_log.change(namespace, "f", FlowChangeAction.CREATE, "sent anyway", 1e-6)
    # ...and it was applied: the answer did not say otherwise.
    found = await FlowStore(flow_log).find(namespace, "f")
    assert found is not None and (found.revision, found.source) == (1, "sent anyway")
