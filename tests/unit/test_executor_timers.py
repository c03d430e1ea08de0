"""The executor's timer queue: due timers fire in slices, a failed one is tried again;
its index, in memory or on disk, hands them out in the order they come due."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from headrace.core.state import Timer, TimerKind
from headrace.services.executor import timers as timers_module
from headrace.services.executor.timer_index import HeapIndex, RocksIndex, TimerIndex
from headrace.services.executor.timers import FIRE_SLICE, TimerQueue

PAST = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "disk"])
def index(request, tmp_path) -> TimerIndex:
    if request.param == "memory":
        return HeapIndex()
    disk = RocksIndex(tmp_path / "timers.db")
    request.addfinalizer(disk.close)
    return disk


async def turns_until(condition, pause_s: float = 0.0, turns: int = 2_000) -> None:
    """Let the queue's loop run until `condition` holds, for a bounded number of turns
    (the assertion after it says what did not happen)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(pause_s)


def due(i: int) -> Timer:
    return Timer(PAST + timedelta(seconds=i), TimerKind.PAUSE, f"run-{i}", 1)


async def test_a_backlog_fires_a_slice_at_a_time_with_acknowledgements_awaited_together(index):
    fired: list[str] = []
    in_flight, most = 0, 0
    release = asyncio.Event()

    async def fire(execution_id: str, timer: Timer) -> None:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()  # the broker's acknowledgement
        in_flight -= 1
        fired.append(execution_id)

    queue = TimerQueue(fire, index)
    for i in range(2 * FIRE_SLICE + 50):
        queue.push(f"ex{i}", due(i))
    running = asyncio.create_task(queue.run())
    await turns_until(lambda: in_flight >= FIRE_SLICE)
    assert in_flight == FIRE_SLICE  # a whole slice waits for its acknowledgements at once
    release.set()
    await turns_until(lambda: len(fired) == 2 * FIRE_SLICE + 50)
    running.cancel()
    assert most == FIRE_SLICE
    assert fired[:3] == ["ex0", "ex1", "ex2"]  # in the order they came due
    assert index.next_due() is None


async def test_a_timer_that_could_not_be_fired_is_tried_again(monkeypatch, index):
    monkeypatch.setattr(timers_module, "RETRY_FIRE_S", 0.01)
    attempts: list[str] = []

    async def fire(execution_id: str, timer: Timer) -> None:
        attempts.append(execution_id)
        if execution_id == "flaky" and attempts.count("flaky") == 1:
            raise OSError("broker away")

    queue = TimerQueue(fire, index)
    queue.push("flaky", due(0))
    queue.push("steady", due(1))
    running = asyncio.create_task(queue.run())
    await turns_until(lambda: attempts.count("flaky") == 2, pause_s=0.005)
    running.cancel()
    assert attempts.count("steady") == 1  # the failure held up nothing else


def test_the_index_hands_out_timers_by_due_time_once_each(index):
    future = Timer(PAST + timedelta(days=400), TimerKind.RETRY, "run-later", 2)
    index.add("ex-b", due(5))
    index.add("ex-a", future)
    index.add("ex-c", due(1))
    index.add("ex-c", due(1))  # the same timer again: held once
    assert index.next_due() == due(1).due

    now = PAST + timedelta(seconds=10)
    assert index.take_due(now, 10) == [("ex-c", due(1)), ("ex-b", due(5))]
    assert index.take_due(now, 10) == []
    # One due before the last taken (a retry of an old timer, a rebuild) is still found.
    index.add("ex-d", due(0))
    assert index.take_due(now, 10) == [("ex-d", due(0))]
    assert index.next_due() == future.due
    assert index.take_due(future.due, 10) == [("ex-a", future)]  # due at `now` is due


def test_take_due_stops_at_the_limit_and_clear_forgets_everything(index):
    for i in range(5):
        index.add(f"ex{i}", due(i))
    assert [e for e, _ in index.take_due(PAST + timedelta(hours=1), 3)] == ["ex0", "ex1", "ex2"]
    index.clear()
    assert index.next_due() is None
    index.add("ex9", due(9))
    assert index.next_due() == due(9).due
