"""The executor's RocksDB store, on a real RocksDB in a temporary folder, as the executor's
Faust app builds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from faust.types import TP

from headrace import messages
from headrace.config import Settings
from headrace.errors import ConfigError
from headrace.services.executor import stored as stored_module
from headrace.services.executor.app import TABLE_NAME, create_app
from headrace.services.executor.runtime import ExecutorRuntime, StateTable
from headrace.services.executor.store import DictStore, RocksStore, lock_folder
from headrace.states import State
from tests.unit.test_executor_runtime import (
    SLOTS_CHANGELOG,
    STATE_CHANGELOG,
    FakeFlows,
    FakeProducer,
    foreach_flow,
    result_of,
    start,
)


def open_table(data_dir: Path):
    app = create_app(Settings(partitions=2, executor_data_dir=str(data_dir)))
    table = app.tables[TABLE_NAME]
    assert isinstance(table.data, RocksStore)
    return app, table


def tp(table, partition: int) -> TP:
    return TP(table.changelog_topic.get_topic_name(), partition)


async def owned_store(data_dir: Path, *partitions: int) -> tuple[object, RocksStore]:
    app, table = open_table(data_dir)
    await table.data.assign_partitions(table, {tp(table, p) for p in partitions})
    return app, table


async def test_a_write_is_kept_with_its_changelog_offset_across_a_restart(tmp_path):
    _, table = await owned_store(tmp_path, 0, 1)
    table.data.write(0, [(b"ex-1", b"state-1"), (b"ex-2", b"state-2")], 41)
    table.data.write(1, [(b"ex-3", b"state-3")], 7)
    assert table.data.read(0, b"ex-1") == b"state-1"
    assert table.data.read(0, b"ex-3") is None  # each partition its own database
    await table.data.stop()

    _, again = open_table(tmp_path)  # the next process on the same folder
    assert again.data.read(0, b"ex-2") == b"state-2"
    assert again.data.read(1, b"ex-3") == b"state-3"
    # Recovery starts after these: only what the changelog got since is read again.
    assert again.data.persisted_offset(tp(again, 0)) == 41
    assert again.data.persisted_offset(tp(again, 1)) == 7


async def test_a_revoked_partition_is_still_read_but_no_longer_written(tmp_path):
    _, table = await owned_store(tmp_path, 0)
    table.data.write(0, [(b"ex-1", b"before")], 3)
    table.data.revoke_partitions(table, {tp(table, 0)})

    table.data.write(0, [(b"ex-1", b"after the rebalance")], 9)

    assert table.data.read(0, b"ex-1") == b"before"
    assert table.data.persisted_offset(tp(table, 0)) == 3


async def test_a_write_acknowledged_before_what_recovery_holds_is_dropped(tmp_path):
    """Revoked while its batch waited for acknowledgements, given back and recovered past
    them: the batch's write would take the disk back."""
    _, table = await owned_store(tmp_path, 0)
    table.data.write(0, [(b"ex-1", b"recovered")], 40)  # recovery read up to 40

    table.data.write(0, [(b"ex-1", b"older")], 35)

    assert table.data.read(0, b"ex-1") == b"recovered"
    assert table.data.persisted_offset(tp(table, 0)) == 40


def test_a_folder_in_use_is_refused_to_a_second_executor(tmp_path):
    held = lock_folder(tmp_path)
    try:
        with pytest.raises(ConfigError, match="in use by another executor"):
            lock_folder(tmp_path)
    finally:
        held.close()
    lock_folder(tmp_path).close()  # free again once the first let go


async def test_a_partition_never_assigned_takes_no_write(tmp_path):
    _, table = await owned_store(tmp_path, 0)
    table.data.write(1, [(b"ex-1", b"state")], 5)
    assert table.data.read(1, b"ex-1") is None


async def test_a_store_past_the_changelogs_end_is_discarded_at_recovery(tmp_path):
    app, table = await owned_store(tmp_path, 0, 1)
    table.data.write(0, [(b"ex-old", b"from an older topic")], 500)
    table.data.write(1, [(b"ex-kept", b"state")], 20)
    recovery = app.tables.recovery
    for partition in (0, 1):
        recovery.add_active(table, tp(table, partition))
    assert recovery.active_offsets[tp(table, 0)] == 500

    # The new fences: partition 0's topic ends before what the store holds.
    recovery._forget_if_stale(tp(table, 0), 12)
    recovery._forget_if_stale(tp(table, 1), 30)

    assert table.data.read(0, b"ex-old") is None
    assert recovery.active_offsets[tp(table, 0)] is None  # read from the start
    assert table.data.read(1, b"ex-kept") == b"state"
    assert recovery.active_offsets[tp(table, 1)] == 20


def test_the_store_is_written_only_through_write(tmp_path):
    _, table = open_table(tmp_path)
    with pytest.raises(TypeError, match="write"):
        table.data[b"ex-1"] = b"state"


def test_the_store_and_its_folder_come_from_the_environment(tmp_path):
    assert Settings.from_env({}).executor_store == "rocksdb://"
    assert Settings.from_env({"HEADRACE_EXECUTOR_STORE": "memory://"}).executor_store == (
        "memory://"
    )
    with pytest.raises(ConfigError, match="HEADRACE_EXECUTOR_STORE: 'redis://' is not one of"):
        Settings.from_env({"HEADRACE_EXECUTOR_STORE": "redis://"})

    chosen = Settings.from_env({"HEADRACE_EXECUTOR_DATA_DIR": str(tmp_path)})
    assert chosen.executor_data_path() == tmp_path
    default = Settings.from_env({})
    state_home = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert default.executor_data_path(state_home) == tmp_path / "state/headrace/executor"
    # The XDG spec: a relative XDG_STATE_HOME is ignored.
    relative = default.executor_data_path({"XDG_STATE_HOME": "state"})
    assert relative == Path.home() / ".local/state/headrace/executor"


async def test_a_big_execution_is_decoded_once_until_the_partitions_move(tmp_path, monkeypatch):
    """Its next batch takes it as the last one left it; after a rebalance, from disk."""
    _, table = await owned_store(tmp_path, 0)
    runtime = ExecutorRuntime(
        StateTable(table.data, STATE_CHANGELOG),
        StateTable(DictStore({}), SLOTS_CHANGELOG),
        FakeFlows({"each": foreach_flow(40)}),
        FakeProducer(),
    )
    decodes = []
    decode = stored_module.decode_task_run
    monkeypatch.setattr(
        stored_module, "decode_task_run", lambda raw: decodes.append(1) or decode(raw)
    )
    await runtime.process_batch([start("ex1", "each", {"items": list(range(40))})])
    requests = runtime.producer.of("ex1", messages.TaskRequest)

    await runtime.process_batch([result_of(requests[0])])
    await runtime.process_batch([result_of(requests[1])])
    assert decodes == []  # each batch took the execution the one before left

    table.data.revoke_partitions(table, {tp(table, 0)})
    await table.data.assign_partitions(table, {tp(table, 0)})
    await runtime.process_batch([result_of(requests[2])])
    assert len(decodes) == 41  # read again from disk: the for-each and its 40 items

    raw = table.data.read(0, b"ex1")
    from_disk = stored_module.load(table.data, 0, b"ex1", raw).execution
    assert [run.state for run in from_disk.task_runs[1:5]] == [State.SUCCESS] * 3 + [State.RUNNING]
