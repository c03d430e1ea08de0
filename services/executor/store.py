"""Where the executor keeps its tables: RocksDB on disk (the default), or memory.

The runtime reads and writes a table through `PartitionStore`, naming the partition each
time: a batch holds executions of many partitions, and Faust's own stores take the
partition of "the current event", which a batch does not have.

`RocksStore` is Faust's RocksDB store (one database per changelog partition, the offset
of the last changelog record it holds kept inside it) with three changes:
- A write goes to disk only once the changelog has it, together with that record's
  offset, in one atomic write batch: the disk is always a prefix of the changelog, so a
  restart reads only the changelog's tail since that offset, and a state the broker never
  acknowledged cannot outlive a crash on disk while the changelog misses it.
- Memory is bounded for the whole process: every partition's database shares one block
  cache, and their write buffers are charged to it (`MEMORY_BUDGET_BYTES`). States live
  on disk; a million waiting executions cost disk, not RAM.
- A revoked partition's database stays open but takes no more writes: a batch in flight
  at a rebalance may still read it, and its late writes belong to the next owner's
  changelog, not to our disk; nor does a write whose offset is below what recovery put
  there since.

`lock_folder` keeps a second executor off a folder in use (RocksDB locks each database,
not the folder, and the timer indexes are emptied at start).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, MutableMapping, Sequence
from functools import cache
from pathlib import Path
from typing import IO, Any, Protocol

import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP, CollectionT

from headrace.errors import ConfigError

# RocksDB's memory for the whole process: a block cache shared by every partition's
# database, with their write buffers (memtables) charged to it.
MEMORY_BUDGET_BYTES = 64 * 1024 * 1024
WRITE_BUFFERS_BYTES = 32 * 1024 * 1024  # of the budget, for memtables
WRITE_BUFFER_BYTES = 8 * 1024 * 1024  # one memtable of one partition


class PartitionStore(Protocol):
    """A table's local copy, addressed by partition.

    `generation` moves whenever something else than the runtime's `write` may have changed
    the store (partitions assigned or revoked, changelog records recovered): what the
    runtime remembers of it is true only while it has not moved. None: the store cannot
    tell, so nothing is remembered."""

    generation: int | None

    def read(self, partition: int, key: bytes) -> bytes | None: ...

    def read_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]: ...

    def write(
        self, partition: int, items: Sequence[tuple[bytes, bytes | None]], offset: int | None
    ) -> None:
        """Store `items` (None: delete the key), which the changelog holds up to `offset`
        (None: not known)."""

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every key and value of the partitions this process owns."""


class DictStore:
    """A table in memory (`memory://`): lost with the process, rebuilt from the changelog.
    Faust recovers it without telling us: no `generation`."""

    generation: int | None = None

    def __init__(self, data: MutableMapping[bytes, bytes]) -> None:
        self.data = data

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(key)

    def read_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return [self.data.get(key) for key in keys]

    def write(
        self, partition: int, items: Sequence[tuple[bytes, bytes | None]], offset: int | None
    ) -> None:
        for key, value in items:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        return list(self.data.items())


def lock_folder(folder: Path) -> IO[str]:
    """Hold `folder` for this process (until it exits), or raise `ConfigError`."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / "LOCK").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            f"the executor data folder {folder} is in use by another executor: give each "
            "executor process its own HEADRACE_EXECUTOR_DATA_DIR"
        ) from None
    return handle


@cache
def _shared_memory() -> tuple[rocksdict.Cache, rocksdict.WriteBufferManager]:
    block_cache = rocksdict.Cache(MEMORY_BUDGET_BYTES)
    write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        WRITE_BUFFERS_BYTES, False, block_cache
    )
    return block_cache, write_buffers


def rocks_options() -> rocksdict.Options:
    """Options of every RocksDB database the executor opens: one memory budget for all."""
    block_cache, write_buffers = _shared_memory()
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_write_buffer_manager(write_buffers)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(block_cache)
    table.set_cache_index_and_filter_blocks(True)  # their memory counts in the budget
    table.set_bloom_filter(10, True)  # a read of an unknown id rarely touches the disk
    options.set_block_based_table_factory(table)
    return options


class RocksStore(faust_rocksdb.Store):
    """Faust's RocksDB store, written by partition and offset (see the module's text)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, driver="rocksdict", **kwargs)
        self._owned: set[int] = set()
        self.generation: int | None = 0

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self._db_for_partition(partition).get(key)

    def read_many(self, partition: int, keys: list[bytes]) -> list[bytes | None]:
        return self._db_for_partition(partition).get(keys)  # one multi-get

    def write(
        self, partition: int, items: Sequence[tuple[bytes, bytes | None]], offset: int | None
    ) -> None:
        if partition not in self._owned:
            # Revoked while the batch ran: the changelog has it for the next owner. What
            # the runtime remembers of the batch is not on our disk (`generation`).
            self._moved()
            return
        db = self._db_for_partition(partition)
        held = db.get(self.offset_key)
        if offset is not None and held is not None and offset <= int(held):
            # Acknowledged after the partition was revoked, given back and recovered past
            # it: what recovery wrote is newer.
            self._moved()
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if offset is not None:
            batch.put(self.offset_key, str(offset).encode())
        db.write(batch)

    def reset_partition(self, partition: int) -> None:
        """Forget everything held for `partition`: recovery then reads its whole changelog."""
        self._moved()
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()
        rocksdict.Rdict.destroy(str(self.partition_path(partition)), rocks_options())

    async def stop(self) -> None:
        # Faust only drops its handles; closing them releases RocksDB's lock on the folder
        # at once, for the next process (or a test) on the same folder.
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        self._owned.clear()

    def _moved(self) -> None:
        assert self.generation is not None
        self.generation += 1

    def apply_changelog_batch(self, *args: Any, **kwargs: Any) -> None:
        self._moved()
        super().apply_changelog_batch(*args, **kwargs)

    def _open_for_partition(self, partition: int) -> Any:
        return rocksdict.Rdict(str(self.partition_path(partition)), options=rocks_options())

    def _set(self, key: bytes, value: bytes | None) -> None:
        raise TypeError("the executor's store is written with write(partition, items, offset)")

    async def assign_partitions(
        self, table: CollectionT, tps: set[TP], generation_id: int = 0
    ) -> None:
        self._moved()
        await super().assign_partitions(table, tps, generation_id)
        self._moved()  # and once done: it awaited
        topics = table.changelog_topic.topics
        self._owned.update(tp.partition for tp in tps if tp.topic in topics)

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        # Faust drops the database here; it stays open instead, only unwritable.
        self._moved()
        topics = table.changelog_topic.topics
        self._owned.difference_update(tp.partition for tp in tps if tp.topic in topics)
