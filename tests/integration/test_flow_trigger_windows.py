"""Counting upstream ends in PostgreSQL: two schedulers at once, and replays after a crash.

Each "scheduler" is a pool of its own, as two processes would have; the counting is the
scheduler's own (`count_match`), only Kafka is left out (the ends are built in memory).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from headrace.db.flow_windows import FlowWindowRepository
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.flow.loader import load_flow
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.flow_triggers import count_match, windowed_matches
from headrace.services.scheduler.flow_windows import window_bounds
from headrace.states import State

DAY = datetime(2024, 5, 1, tzinfo=UTC)
NOW = DAY + timedelta(hours=12)


@pytest.fixture
async def schedulers(database_url: str) -> AsyncIterator[list[FlowWindowRepository]]:
    pools = [await create_pool(database_url, max_size=4) for _ in range(2)]
    await migrate(pools[0])
    try:
        yield [FlowWindowRepository(pool) for pool in pools]
    finally:
        for pool in pools:
            await pool.close()


def downstream(
    namespace: str, trigger_id: str, extra: str = "", three: bool = False
) -> DeclaredTrigger:
    c = f"\n        - {{namespace: {namespace}, flowId: c}}" if three else ""
    flow = load_flow(
        f"""
id: report
namespace: {namespace}
tasks:
  - {{id: hello, type: log, message: hi}}
triggers:
  - id: {trigger_id}
    type: flow
    preconditions:
      {extra}
      flows:
        - {{namespace: {namespace}, flowId: a}}
        - {{namespace: {namespace}, flowId: b}}{c}
""",
        "test",
    )
    return DeclaredTrigger(flow, 1, flow.triggers[0])


def ended(namespace: str, flow_id: str, execution_id: str, hours: float) -> ExecutionEvent:
    end = DAY + timedelta(hours=hours)
    snapshot = ExecutionSnapshot(
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=1,
        state=State.SUCCESS,
        histories=[
            StateChange(State.RUNNING, end - timedelta(minutes=1)),
            StateChange(State.SUCCESS, end),
        ],
        inputs={},
        outputs={"id": execution_id},
    )
    return ExecutionEvent(execution_id, 3, end, execution=snapshot)


def match(declared: DeclaredTrigger, event: ExecutionEvent):
    [found] = windowed_matches(event, [declared])
    return found


async def test_two_schedulers_counting_the_last_ends_at_once_start_exactly_one(
    schedulers: list[FlowWindowRepository],
) -> None:
    first, second = schedulers
    namespace = f"tests.windows.n{uuid.uuid4().hex[:8]}"
    # Many triggers waiting for a, b and c. c ended first: the window's row exists. Then
    # two schedulers count a and b at the same moment: without the row lock both would
    # read "only c met" and write over each other, and no trigger would fire.
    triggers = [downstream(namespace, f"t{i}", three=True) for i in range(30)]
    for d in triggers:
        assert (
            await count_match(first, match(d, ended(namespace, "c", f"c-{d.trigger.id}", 1)), NOW)
            is None
        )
    results = await asyncio.gather(
        *(
            count_match(repo, match(d, ended(namespace, flow, f"{flow}-{d.trigger.id}", 2)), NOW)
            for d in triggers
            for repo, flow in ((first, "a"), (second, "b"))
        )
    )
    starts = [start for start in results if start is not None]
    assert sorted(s.trigger["id"] for s in starts) == sorted(d.trigger.id for d in triggers)
    for start in starts:
        upstreams = [u["executionId"] for u in start.trigger["upstreams"]]
        assert upstreams == [f"{flow}-{start.trigger['id']}" for flow in "abc"]


async def test_a_replayed_end_republishes_its_execution_and_counts_nothing_twice(
    schedulers: list[FlowWindowRepository],
) -> None:
    repo, other = schedulers
    namespace = f"tests.windows.n{uuid.uuid4().hex[:8]}"
    declared = downstream(namespace, "both")
    a1 = match(declared, ended(namespace, "a", "a1", 1))
    b1 = match(declared, ended(namespace, "b", "b1", 2))
    assert await count_match(repo, a1, NOW) is None
    fired = await count_match(repo, b1, NOW)
    assert fired is not None
    # The scheduler crashed before publishing: the end comes again, at either scheduler.
    again = await count_match(other, b1, NOW + timedelta(minutes=5))
    assert again is not None and again.execution_id == fired.execution_id
    assert again.trigger == fired.trigger
    # a1 replayed after the reset must not count towards the next start.
    assert await count_match(other, a1, NOW) is None
    window = window_bounds(a1.spec.preconditions.time_window, a1.end.ended_at).start
    assert await repo.window(declared.key, window) == {}
    assert await count_match(repo, match(declared, ended(namespace, "b", "b2", 3)), NOW) is None
    # A new a-end completes the second set: another execution.
    second = await count_match(repo, match(declared, ended(namespace, "a", "a2", 4)), NOW)
    assert second is not None and second.execution_id != fired.execution_id
    assert [u["executionId"] for u in second.trigger["upstreams"]] == ["a2", "b2"]


async def test_ends_in_different_windows_do_not_meet(
    schedulers: list[FlowWindowRepository],
) -> None:
    repo = schedulers[0]
    namespace = f"tests.windows.n{uuid.uuid4().hex[:8]}"
    declared = downstream(namespace, "hourly", "timeWindow: {window: PT1H}")
    assert await count_match(repo, match(declared, ended(namespace, "a", "a1", 1.5)), NOW) is None
    assert await count_match(repo, match(declared, ended(namespace, "b", "b1", 2.5)), NOW) is None
    fired = await count_match(repo, match(declared, ended(namespace, "a", "a2", 2.75)), NOW)
    assert fired is not None
    assert [u["executionId"] for u in fired.trigger["upstreams"]] == ["a2", "b1"]


async def test_old_windows_and_ends_are_forgotten(
    schedulers: list[FlowWindowRepository], database_url: str
) -> None:
    repo = schedulers[0]
    namespace = f"tests.windows.n{uuid.uuid4().hex[:8]}"
    declared = downstream(namespace, "old")
    a1 = match(declared, ended(namespace, "a", "a1", 1))
    await count_match(repo, a1, NOW)
    window = window_bounds(a1.spec.preconditions.time_window, a1.end.ended_at)
    assert window.end is not None
    await repo.forget_before(window.end)  # not closed before its own end
    assert await repo.window(declared.key, window.start) is not None
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE flow_trigger_ends SET seen_at = $2 WHERE namespace = $1",
            namespace,
            window.end,
        )
    finally:
        await conn.close()
    await repo.forget_before(window.end + timedelta(seconds=1))
    assert await repo.window(declared.key, window.start) is None
    # Its end forgotten too: counted again as new (only possible past the topic's retention).
    assert await count_match(repo, a1, NOW) is None
    assert await repo.window(declared.key, window.start) == {next(iter(a1.met)): a1.end.to_json()}
