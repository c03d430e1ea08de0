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

from headrace.core.state import (
    Execution,
    StateDecodeError,
    TaskRun,
    decode_task_run,
    encode_task_run,
)
from headrace.services.executor.store import PartitionStore

INLINE_TASK_RUNS = 32
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


def load(store: PartitionStore, partition: int, key: bytes, raw: bytes) -> Execution:
    """The execution stored as `raw` under `key`, with its task runs stored apart read
    back. Raises `StateDecodeError` (`StateVersionError` for a newer format)."""
    execution, count = Execution.from_header(raw)
    if count is None:
        return execution
    keys = [task_run_key(key, position) for position in range(count)]
    task_runs = []
    for position, value in enumerate(store.read_many(partition, keys)):
        if value is None:
            raise StateDecodeError(f"task run {position} of {count} is missing")
        task_runs.append(decode_task_run(value))
    execution.task_runs = task_runs
    return execution


def task_run_records(key: bytes, before: list[TaskRun], after: list[TaskRun]) -> list[Record]:
    """The records that take the task runs stored apart from `before` (the execution's
    task runs as loaded, [] if none) to `after` (as the batch left them; [] once it is
    evicted)."""
    held = len(before) if len(before) > INLINE_TASK_RUNS else 0
    keep = len(after) if len(after) > INLINE_TASK_RUNS else 0
    records: list[Record] = [
        (task_run_key(key, position), encode_task_run(run))
        for position, run in enumerate(after[:keep])
        if position >= held or before[position] is not run
    ]
    records += [(task_run_key(key, position), None) for position in range(keep, held)]
    return records
