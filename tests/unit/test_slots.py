"""Flow concurrency slots: the limit holds for any order and duplication of requests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from headrace.core.slots import FlowSlots, SlotAnswer, decide
from headrace.messages import ConcurrencyBehavior, SlotRequest, SlotRequestKind

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ACQUIRE, RELEASE = SlotRequestKind.ACQUIRE, SlotRequestKind.RELEASE


def request(
    kind: SlotRequestKind, execution_id: str, limit: int = 1, behavior=ConcurrencyBehavior.QUEUE
):
    return SlotRequest("r", "ns/flow", execution_id, kind, NOW, limit, behavior)


def test_grants_up_to_the_limit_then_queues_in_order() -> None:
    step = decide(None, request(ACQUIRE, "a", limit=2))
    assert step.answers == [SlotAnswer("a", True)]
    step = decide(step.slots, request(ACQUIRE, "b", limit=2))
    assert step.answers == [SlotAnswer("b", True)]
    step = decide(step.slots, request(ACQUIRE, "c", limit=2))
    assert step.answers == [] and step.slots.queue == ("c",)
    step = decide(step.slots, request(ACQUIRE, "d", limit=2))
    step = decide(step.slots, request(RELEASE, "a"))
    assert step.answers == [SlotAnswer("c", True)]
    assert step.slots.holders == ("b", "c") and step.slots.queue == ("d",)


def test_cancel_and_fail_behaviors_refuse_at_once() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    for behavior in (ConcurrencyBehavior.CANCEL, ConcurrencyBehavior.FAIL):
        step = decide(slots, request(ACQUIRE, "b", behavior=behavior))
        assert step.answers == [SlotAnswer("b", False, behavior)]
        assert step.slots == slots


def test_duplicates_are_harmless() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    again = decide(slots, request(ACQUIRE, "a"))
    assert again.answers == [SlotAnswer("a", True)] and again.slots == slots
    queued = decide(slots, request(ACQUIRE, "b")).slots
    assert decide(queued, request(ACQUIRE, "b")).slots == queued
    released = decide(queued, request(RELEASE, "a")).slots
    assert decide(released, request(RELEASE, "a")).slots == released
    assert decide(released, request(RELEASE, "nobody")).slots == released


def test_an_execution_ending_while_queued_leaves_the_queue() -> None:
    slots = decide(decide(None, request(ACQUIRE, "a")).slots, request(ACQUIRE, "b")).slots
    step = decide(slots, request(RELEASE, "b"))
    assert step.slots.queue == () and step.answers == []


def test_round_trips_through_bytes() -> None:
    slots = FlowSlots(3, ("a", "b"), ("c",))
    assert FlowSlots.from_bytes(slots.to_bytes()) == slots


@given(
    limit=st.integers(1, 3),
    requests=st.lists(
        st.tuples(st.sampled_from([ACQUIRE, RELEASE]), st.sampled_from("abcdef")), max_size=60
    ),
)
def test_the_limit_always_holds_and_nobody_is_both_waiting_and_running(limit, requests) -> None:
    slots = None
    granted: set[str] = set()
    for kind, execution_id in requests:
        step = decide(slots, request(kind, execution_id, limit=limit))
        slots = step.slots
        assert len(slots.holders) <= limit
        assert not set(slots.holders) & set(slots.queue)
        assert len(set(slots.holders)) == len(slots.holders)
        granted |= {a.execution_id for a in step.answers if a.granted}
        assert set(slots.holders) <= granted  # every holder was told it may run
        if len(slots.holders) < limit:
            assert not slots.queue  # nobody waits while a slot is free
