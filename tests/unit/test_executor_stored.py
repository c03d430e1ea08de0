"""An execution as table records: one record while small, a header and one record per
task run once big; only what a step changed is written again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from headrace.core.state import Execution, StateDecodeError, TaskRun
from headrace.services.executor.store import DictStore
from headrace.services.executor.stored import (
    INLINE_TASK_RUNS,
    Decoded,
    Loaded,
    is_task_run_key,
    load,
    sizes_after,
    state_bytes,
    task_run_key,
    task_run_records,
)
from headrace.states import State
from tests.unit.test_core_state import _execution

KEY = b"ex1"


def with_runs(count: int) -> Execution:
    execution = _execution()
    template = execution.task_runs[0]
    execution.task_runs = [replace(template, id=f"tr{i}", outputs={"i": i}) for i in range(count)]
    return execution


def save(store: DictStore, before: list[TaskRun], after: Execution) -> list[tuple]:
    """Write `after` as the runtime does, `before` being the task runs it loaded (stored
    apart if there are more than INLINE_TASK_RUNS: as this module stores them)."""
    held = len(before) if len(before) > INLINE_TASK_RUNS else 0
    records = [(KEY, state_bytes(after)), *task_run_records(KEY, before, held, after.task_runs)]
    store.write(0, records, None)
    return records


def test_a_small_execution_is_one_record():
    store = DictStore({})
    execution = with_runs(INLINE_TASK_RUNS)
    assert save(store, [], execution) == [(KEY, execution.to_bytes())]
    assert load(store, 0, KEY, store.data[KEY]).execution == execution


def test_a_big_execution_keeps_each_task_run_apart_and_reads_back_whole():
    store = DictStore({})
    execution = with_runs(INLINE_TASK_RUNS + 1)
    records = save(store, [], execution)
    assert len(records) == 1 + INLINE_TASK_RUNS + 1
    assert sorted(store.data) == sorted([KEY] + [task_run_key(KEY, i) for i in range(33)])
    assert load(store, 0, KEY, store.data[KEY]).execution == execution
    assert [is_task_run_key(key) for key, _ in records] == [False] + [True] * 33


def test_a_step_writes_only_the_task_runs_it_changed_whatever_their_number():
    sizes = []
    for count in (100, 10_000):
        store = DictStore({})
        before = with_runs(count)
        save(store, [], before)
        after = replace(before, task_runs=list(before.task_runs), seq=before.seq + 1)
        after.task_runs[7] = replace(after.task_runs[7], state=State.FAILED)
        after.task_runs.append(replace(after.task_runs[0], id="new"))

        records = save(store, before.task_runs, after)

        assert [key for key, _ in records] == [
            KEY,
            task_run_key(KEY, 7),
            task_run_key(KEY, count),
        ]
        assert load(store, 0, KEY, store.data[KEY]).execution == after
        sizes.append([len(value) for _, value in records])
    # The header counts task runs: "100" and "10000" differ by two digits, nothing else.
    assert sizes[1][0] - sizes[0][0] == 2 and sizes[1][1:] == sizes[0][1:]


def test_task_runs_dropped_or_shifted_are_rewritten_and_the_tail_deleted():
    store = DictStore({})
    before = with_runs(40)
    save(store, [], before)
    after = replace(before, task_runs=before.task_runs[:5] + before.task_runs[6:36])

    records = save(store, before.task_runs, after)

    written = [key for key, value in records[1:] if value is not None]
    deleted = [key for key, value in records[1:] if value is None]
    assert written == [task_run_key(KEY, i) for i in range(5, 35)]
    assert deleted == [task_run_key(KEY, i) for i in range(35, 40)]
    assert load(store, 0, KEY, store.data[KEY]).execution == after
    assert task_run_key(KEY, 35) not in store.data


def test_a_big_execution_that_shrinks_is_one_record_again():
    store = DictStore({})
    before = with_runs(40)
    save(store, [], before)
    after = replace(before, task_runs=before.task_runs[:3])

    save(store, before.task_runs, after)

    assert list(store.data) == [KEY]
    assert Execution.from_bytes(store.data[KEY]) == after


def test_an_evicted_big_execution_leaves_no_task_run_behind():
    store = DictStore({})
    before = with_runs(40)
    save(store, [], before)
    deleted = task_run_records(KEY, before.task_runs, 40, [])
    store.write(0, [(KEY, b"tombstone"), *deleted], None)
    assert store.data == {KEY: b"tombstone"}


def test_a_big_execution_stored_whole_by_a_previous_release_is_stored_apart_whole():
    """Format 4 held every state in one record, whatever its size: the first batch that
    writes it again writes every task run, even those it did not change."""
    store = DictStore({})
    execution = with_runs(40)
    store.write(0, [(KEY, execution.to_bytes())], None)
    loaded = load(store, 0, KEY, store.data[KEY])
    assert loaded.sizes == [] and loaded.execution == execution
    runs = loaded.execution.task_runs

    records = [(KEY, state_bytes(execution)), *task_run_records(KEY, runs, 0, runs)]
    store.write(0, records, None)

    assert len(records) == 1 + 40
    again = load(store, 0, KEY, store.data[KEY])
    assert again.execution == execution
    assert again.sizes == [len(value) for _, value in records[1:]]


def test_a_missing_task_run_is_a_corrupt_state():
    store = DictStore({})
    save(store, [], with_runs(40))
    del store.data[task_run_key(KEY, 17)]
    with pytest.raises(StateDecodeError, match="task run 17 of 40 is missing"):
        load(store, 0, KEY, store.data[KEY])


def test_sizes_follow_the_records_written():
    before = with_runs(40)
    after = replace(before, task_runs=before.task_runs[:36])
    after.task_runs[3] = replace(after.task_runs[3], outputs={"much": "x" * 100})
    records = task_run_records(KEY, before.task_runs, 40, after.task_runs)
    sizes = [10] * 40

    assert sizes_after(sizes, records) == [10, 10, 10, len(records[0][1])] + [10] * 32
    grown = task_run_records(KEY, [], 0, after.task_runs)  # written whole: every one
    assert sizes_after([], grown) == [len(value) for _, value in grown]


def test_decoded_executions_are_kept_while_the_store_has_not_moved_and_the_header_holds():
    decoded = Decoded()
    big, small = with_runs(40), with_runs(3)
    decoded.keep(KEY, b"header-1", 7, big, [100] * 40)
    decoded.keep(b"ex-small", b"small", 7, small, [])

    assert decoded.get(KEY, b"header-1", 7) == Loaded(big, [100] * 40)
    assert decoded.get(KEY, b"header-1", 7).execution is big
    assert decoded.get(KEY, b"header-1", 8) is None  # a rebalance or a recovery since
    assert decoded.get(KEY, b"header-2", 7) is None  # written by someone else
    assert decoded.get(KEY, b"header-1", None) is None  # a store that cannot tell
    assert decoded.get(b"ex-small", b"small", 7) is None  # small: decoding it is cheap
    decoded.forget(KEY)
    assert decoded.get(KEY, b"header-1", 7) is None


def test_decoded_executions_beyond_the_limit_go_least_recently_used_first():
    decoded = Decoded(limit=10_000)
    first, second, third = with_runs(40), with_runs(40), with_runs(40)
    decoded.keep(b"ex-1", b"h", 0, first, [100] * 40)
    decoded.keep(b"ex-2", b"h", 0, second, [100] * 40)
    assert decoded.get(b"ex-1", b"h", 0) is not None  # used: ex-2 is now the oldest
    decoded.keep(b"ex-3", b"h", 0, third, [100] * 40)  # 12,003 bytes: one must go

    assert decoded.get(b"ex-2", b"h", 0) is None
    assert decoded.get(b"ex-1", b"h", 0).execution is first
    assert decoded.get(b"ex-3", b"h", 0).execution is third
    decoded.keep(b"ex-4", b"h", 0, with_runs(40), [1_000] * 40)  # alone over the limit
    assert decoded.get(b"ex-4", b"h", 0) is None
    assert decoded.get(b"ex-3", b"h", 0) is not None  # and pushed nothing out
