"""An execution as records of the executor's table: one, or a header and its task runs.

An execution of up to `INLINE_TASK_RUNS` task runs is one record under its id (most
flows). A bigger one keeps each task run under a key of its own (`task_run_key`), and
its record is a header that counts them (`Execution.header_bytes`). A step then writes
the header and only the task runs it changed: a for-each's 9,999th item costs the table
and its changelog what the 10th did, where one record would grow with every item and be
rewritten whole at each batch.

A task run's key is its position among the execution's task runs. The core never mutates
a task run (copy-on-write), so the ones a batch changed are those whose object is no
longer the one loaded; a restart that drops task runs shifts the rest, and they are
written again at their new positions. Keys past the new end are deleted (a `None` value:
a tombstone on the compacted changelog).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from headrace.core.state import (
    Execution,
    StateDecodeError,
    TaskRun,
    decode_task_run,
    encode_task_run,
)
from headrace.services.executor.store import PartitionStore

INLINE_TASK_RUNS = 32
# Kept decoded between batches (`Decoded`), in all: their size as stored. Decoded, a
# task run takes a few times its stored size in Python objects.
CACHED_BYTES = 16 * 1024 * 1024
_SEPARATOR = b"\x00"  # never in an execution id (base62, or derived from base62 ids)

Record = tuple[bytes, bytes | None]  # a table key and its new value (None: deleted)


def task_run_key(key: bytes, position: int) -> bytes:
    return key + _SEPARATOR + position.to_bytes(4, "big")


def is_task_run_key(key: bytes) -> bool:
    return len(key) > 5 and key[-5:-4] == _SEPARATOR


def stored_apart(execution: Execution) -> bool:
    return len(execution.task_runs) > INLINE_TASK_RUNS


def state_bytes(execution: Execution) -> bytes:
    """What is stored under the execution's own key."""
    return execution.header_bytes() if stored_apart(execution) else execution.to_bytes()


@dataclass(slots=True)
class _Held:
    generation: int
    header: bytes
    execution: Execution
    sizes: list[int]  # of each task run's record
    size: int  # of all its records


class Decoded:
    """Big executions as the last batch left them, decoded: reading and decoding every
    task run of a for-each at each batch was a third of the executor's time while it ran.

    An entry is true while the store's `generation` has not moved since the batch that
    loaded it (between rebalances and recoveries the runtime is the only writer of its
    partitions, and it `keep`s or `forget`s each execution it writes) and its header is
    the one stored. The core never mutates an execution, so the objects can be shared.
    The least recently used go first, beyond `limit` bytes of records in all."""

    def __init__(self, limit: int = CACHED_BYTES) -> None:
        self._limit = limit
        self._held: OrderedDict[bytes, _Held] = OrderedDict()
        self._bytes = 0

    def get(self, key: bytes, header: bytes, generation: int | None) -> Loaded | None:
        held = self._held.get(key)
        if held is None or held.generation != generation or held.header != header:
            return None
        self._held.move_to_end(key)
        return Loaded(held.execution, held.sizes)

    def keep(
        self, key: bytes, header: bytes, generation: int, execution: Execution, sizes: list[int]
    ) -> None:
        """`sizes`: of its task runs' records, as stored now (`sizes_after`)."""
        self.forget(key)
        if not stored_apart(execution):
            return  # one small record: decoding it is cheap
        size = len(header) + sum(sizes)
        if size > self._limit:
            return
        self._held[key] = _Held(generation, header, execution, sizes, size)
        self._bytes += size
        while self._bytes > self._limit:
            _, oldest = self._held.popitem(last=False)
            self._bytes -= oldest.size

    def forget(self, key: bytes) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._bytes -= held.size


@dataclass(slots=True)
class Loaded:
    """An execution as read, and the size of each of its task runs' records stored
    apart (none when it is one whole record, whatever its size: a previous release
    stored every state whole)."""

    execution: Execution
    sizes: list[int]


def sizes_after(sizes: list[int], records: list[Record]) -> list[int]:
    """The sizes of the task runs' records once `records` (`task_run_records`) are
    written over those of `sizes`."""
    after = list(sizes)
    for key, value in records:
        if not is_task_run_key(key):
            continue
        position = int.from_bytes(key[-4:], "big")
        if value is None:
            del after[position:]  # deletions are the tail, in order
        elif position < len(after):
            after[position] = len(value)
        else:
            after.append(len(value))  # new positions come in order
    return after


def load(
    store: PartitionStore,
    partition: int,
    key: bytes,
    raw: bytes,
    decoded: Decoded | None = None,
) -> Loaded:
    """The execution stored as `raw` under `key`, with its task runs stored apart read
    back (or as `decoded` holds it). Raises `StateDecodeError` (`StateVersionError` for
    a newer format)."""
    if decoded is not None:
        held = decoded.get(key, raw, store.generation)
        if held is not None:
            return held
    execution, count = Execution.from_header(raw)
    if count is None:
        return Loaded(execution, [])
    keys = [task_run_key(key, position) for position in range(count)]
    task_runs, sizes = [], []
    for position, value in enumerate(store.read_many(partition, keys)):
        if value is None:
            raise StateDecodeError(f"task run {position} of {count} is missing")
        task_runs.append(decode_task_run(value))
        sizes.append(len(value))
    execution.task_runs = task_runs
    return Loaded(execution, sizes)


def task_run_records(
    key: bytes, before: list[TaskRun], held: int, after: list[TaskRun]
) -> list[Record]:
    """The records that take the task runs stored apart from `before` (the execution's
    task runs as loaded, [] if none; `held` of them stored apart: `len(Loaded.sizes)`)
    to `after` (as the batch left them; [] once it is evicted)."""
    keep = len(after) if len(after) > INLINE_TASK_RUNS else 0
    records: list[Record] = [
        (task_run_key(key, position), encode_task_run(run))
        for position, run in enumerate(after[:keep])
        if position >= held or before[position] is not run
    ]
    records += [(task_run_key(key, position), None) for position in range(keep, held)]
    return records
