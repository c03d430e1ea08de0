"""The executor's timer queue: due timers fire in slices, a failed one is tried again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from headrace.core.state import Timer, TimerKind
from headrace.services.executor import timers as timers_module
from headrace.services.executor.timers import FIRE_SLICE, TimerQueue

PAST = datetime(2026, 1, 1, tzinfo=UTC)


async def turns_until(condition, pause_s: float = 0.0, turns: int = 2_000) -> None:
    """Let the queue's loop run until `condition` holds, for a bounded number of turns
    (the assertion after it says what did not happen)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(pause_s)


def due(i: int) -> Timer:
    return Timer(PAST + timedelta(seconds=i), TimerKind.PAUSE, f"run-{i}", 1)


async def test_a_backlog_fires_a_slice_at_a_time_with_acknowledgements_awaited_together():
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

    queue = TimerQueue(fire)
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
    assert len(queue) == 0


async def test_a_timer_that_could_not_be_fired_is_tried_again(monkeypatch):
    monkeypatch.setattr(timers_module, "RETRY_FIRE_S", 0.01)
    attempts: list[str] = []

    async def fire(execution_id: str, timer: Timer) -> None:
        attempts.append(execution_id)
        if execution_id == "flaky" and attempts.count("flaky") == 1:
            raise OSError("broker away")

    queue = TimerQueue(fire)
    queue.push("flaky", due(0))
    queue.push("steady", due(1))
    running = asyncio.create_task(queue.run())
    await turns_until(lambda: attempts.count("flaky") == 2, pause_s=0.005)
    running.cancel()
    assert attempts.count("steady") == 1  # the failure held up nothing else
