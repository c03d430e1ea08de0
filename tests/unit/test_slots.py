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
    return SlotRequest(
        f"{kind}:{execution_id}", "ns/flow", execution_id, kind, NOW, limit, behavior
    )


def grant(execution_id: str) -> SlotAnswer:
    """A grant that names the execution's ACQUIRE as the claim it answers."""
    return SlotAnswer(execution_id, True, claim=f"ACQUIRE:{execution_id}")


def test_grants_up_to_the_limit_then_queues_in_order() -> None:
    step = decide(None, request(ACQUIRE, "a", limit=2))
    assert step.answers == [grant("a")]
    step = decide(step.slots, request(ACQUIRE, "b", limit=2))
    assert step.answers == [grant("b")]
    step = decide(step.slots, request(ACQUIRE, "c", limit=2))
    assert step.answers == [] and step.slots.queue == ("c",)
    step = decide(step.slots, request(ACQUIRE, "d", limit=2))
    step = decide(step.slots, request(RELEASE, "a"))
    assert step.answers == [grant("c")]  # admitted by a's release, still naming c's claim
    assert step.slots.holders == ("b", "c") and step.slots.queue == ("d",)
    assert step.slots.claims == {"d": "ACQUIRE:d"}


def test_cancel_and_fail_behaviors_refuse_at_once() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    for behavior in (ConcurrencyBehavior.CANCEL, ConcurrencyBehavior.FAIL):
        step = decide(slots, request(ACQUIRE, "b", behavior=behavior))
        assert step.answers == [SlotAnswer("b", False, behavior, "ACQUIRE:b")]
        assert step.slots == slots


def test_duplicates_are_harmless() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    again = decide(slots, request(ACQUIRE, "a"))
    assert again.answers == [grant("a")] and again.slots == slots
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
    slots = FlowSlots(3, ("a", "b"), ("c",), {"c": "ACQUIRE:c"})
    assert FlowSlots.from_bytes(slots.to_bytes()) == slots
    assert FlowSlots.from_bytes(FlowSlots(3, ("a",)).to_bytes()) == FlowSlots(3, ("a",))


def test_slots_stored_before_claims_decode_and_admit_without_a_claim() -> None:
    old = FlowSlots.from_bytes(b'[1,["a"],["b"]]')
    assert old == FlowSlots(1, ("a",), ("b",))
    assert decide(old, request(RELEASE, "a")).answers == [SlotAnswer("b", True)]


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
        assert set(slots.claims) == set(slots.queue)  # a claim kept for each waiting one


def test_an_acquire_redelivered_after_its_release_takes_no_slot() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    slots = decide(slots, request(RELEASE, "a")).slots
    again = decide(slots, request(ACQUIRE, "a"))  # the same request, delivered twice
    assert again.answers == [] and again.slots.holders == ()
    # The same execution claiming anew (a restart: a new request id) is granted.
    fresh = SlotRequest("ACQUIRE:a:2", "ns/flow", "a", ACQUIRE, NOW, 1, ConcurrencyBehavior.QUEUE)
    assert decide(again.slots, fresh).slots.holders == ("a",)
    # What is remembered survives the table's round trip.
    assert FlowSlots.from_bytes(slots.to_bytes()) == slots


def test_a_queued_claim_is_remembered_once_admitted_and_given_back() -> None:
    slots = decide(None, request(ACQUIRE, "a")).slots
    slots = decide(slots, request(ACQUIRE, "b")).slots  # queued
    slots = decide(slots, request(RELEASE, "a")).slots  # b admitted
    slots = decide(slots, request(RELEASE, "b")).slots
    assert slots.released == ("ACQUIRE:a", "ACQUIRE:b") and slots.holders == ()
    assert decide(slots, request(ACQUIRE, "b")).answers == []
