"""The executor consumer's ledger: every input record delivered once, in order, even when
a rebalance drops records or a stale batch skips some."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.services.executor.offsets import (
    MAX_REWINDS,
    OffsetLedger,
    RewoundTooOften,
    Verdict,
    head_missing,
)

P = "task-results[0]"


def test_records_in_order_are_delivered() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 5})
    assert [ledger.check(P, offset) for offset in (5, 6, 7)] == [Verdict.DELIVER] * 3
    assert ledger.expected(P) == 8


def test_a_record_past_the_expected_one_rewinds_and_the_rest_of_its_batch_is_stale() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 5})
    assert ledger.check(P, 9) is Verdict.REWIND
    assert ledger.check(P, 10) is Verdict.STALE
    ledger.new_batch()  # fetched again from 5
    assert [ledger.check(P, offset) for offset in (5, 6)] == [Verdict.DELIVER] * 2


def test_records_fetched_again_after_a_rewind_are_duplicates() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 0})
    assert [ledger.check(P, offset) for offset in (0, 1, 2)] == [Verdict.DELIVER] * 3
    assert ledger.check(P, 1) is Verdict.DUPLICATE


def test_a_partition_not_tracked_starts_at_its_first_record() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({})
    assert ledger.check(P, 42) is Verdict.DELIVER and ledger.expected(P) == 43


def test_a_dropped_record_moves_the_partition_back_to_it() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 0})
    for offset in range(5):
        ledger.check(P, offset)
    assert ledger.dropped(P, 3) and ledger.expected(P) == 3
    assert not ledger.dropped(P, 4)  # later than the first one dropped: nothing to do
    assert ledger.check(P, 5) is Verdict.STALE  # the batch in flight
    ledger.new_batch()
    assert ledger.check(P, 3) is Verdict.DELIVER


def test_records_dropped_after_a_reset_need_no_rewind() -> None:
    """Delivered beyond the committed offset and dropped: the reset expects them already."""
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 10})
    assert not ledger.dropped(P, 12)
    assert ledger.check(P, 10) is Verdict.DELIVER


def test_deleted_records_are_skipped_to_the_first_one_kept() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 3})
    assert ledger.check(P, 100) is Verdict.REWIND
    ledger.skip_to(P, 100)
    ledger.new_batch()
    assert ledger.check(P, 100) is Verdict.DELIVER


def test_skipping_the_same_records_again_and_again_gives_up() -> None:
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 3})
    for _ in range(MAX_REWINDS):
        assert ledger.check(P, 7) is Verdict.REWIND
        ledger.new_batch()
    with pytest.raises(RewoundTooOften):
        ledger.check(P, 7)


@given(st.data())
def test_whatever_is_skipped_or_dropped_every_offset_is_delivered_once_in_order(data) -> None:
    """A partition of 40 records, fetched in batches that may start anywhere at or after
    where the consumer really is (a fetch made before a seek skips records), but right
    where a seek put it; delivered records may be dropped before they are applied (then
    the consumer seeks back to them)."""
    ledger: OffsetLedger[str] = OffsetLedger()
    ledger.reset({P: 0})
    applied: list[int] = []
    queued: list[int] = []
    position = 0  # where the broker consumer fetches from
    sought = False  # the last fetch position came from a seek: the next batch starts there
    for _ in range(400):
        if len(applied) == 40:
            break
        if queued and data.draw(st.booleans()):
            # a rebalance clears the queue: seek back to the first record dropped
            first = min(queued)
            queued.clear()
            if ledger.dropped(P, first):
                position, sought = first, True
            continue
        applied += queued  # the stream applies what was queued
        queued.clear()
        ledger.new_batch()
        start = position if sought else data.draw(st.integers(position, min(position + 3, 40)))
        sought = False
        for offset in range(start, min(start + data.draw(st.integers(1, 6)), 40)):
            verdict = ledger.check(P, offset)
            position = offset + 1
            if verdict is Verdict.REWIND:
                position, sought = ledger.expected(P), True
                break
            if verdict is Verdict.DELIVER:
                queued.append(offset)
    applied += queued
    assert applied == sorted(set(applied)), "in order, once"
    assert applied == list(range(len(applied))), "nothing skipped"


def test_a_commit_waits_for_the_record_after_the_committed_offset() -> None:
    # Faust would commit 12 here (it lets a head of one missing record through).
    assert head_missing([11, 12], committed=10, floor=5)
    assert not head_missing([10, 11, 12], committed=10, floor=5)
    assert not head_missing([], committed=10, floor=5)
    # Nothing committed yet: the assignment's start (its earliest record) must come first.
    assert head_missing([4, 5], committed=None, floor=3)
    assert not head_missing([3, 4], committed=None, floor=3)
    assert head_missing([1], committed=0, floor=0)  # offset 0 is a committed offset too
    # Retention deleted 10-19 before they were applied: the first record kept is awaited.
    assert not head_missing([20, 21], committed=10, floor=20)
    assert head_missing([21], committed=10, floor=20)
    assert not head_missing([7], committed=None, floor=None)  # untracked: Faust decides
