"""The pending timers of a `TimerQueue`, ordered by when they come due: in memory, or on
disk for the RocksDB store (a million paused executions are a million timers, ~0.5 KiB
each in a Python heap).

Both are derived data: the timers live in the execution states, and the index is
cleared and rebuilt from them after every recovery. So the disk index keeps no
write-ahead log and starts empty in each process.
"""

from __future__ import annotations

import heapq
import itertools
import shutil
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import orjson
import rocksdict

from headrace.core.state import Timer, TimerKind
from headrace.services.executor.store import rocks_options

# A key: when it is due (microseconds since the epoch, big-endian, so keys sort by time),
# then the execution id and the timer, which make it unique.
_DUE = struct.Struct(">Q")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimerIndex(Protocol):
    def add(self, execution_id: str, timer: Timer) -> None:
        """Idempotent: the same timer of the same execution is held once."""

    def next_due(self) -> datetime | None: ...

    def take_due(self, now: datetime, limit: int) -> list[tuple[str, Timer]]:
        """Remove and return up to `limit` timers due at `now`, earliest first."""

    def clear(self) -> None: ...


class HeapIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str, Timer]] = []
        self._order = itertools.count()  # ties break in push order, never on Timer
        self._held: set[tuple[str, Timer]] = set()

    def add(self, execution_id: str, timer: Timer) -> None:
        if (execution_id, timer) in self._held:
            return
        self._held.add((execution_id, timer))
        heapq.heappush(self._heap, (timer.due, next(self._order), execution_id, timer))

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def take_due(self, now: datetime, limit: int) -> list[tuple[str, Timer]]:
        due = []
        while self._heap and self._heap[0][0] <= now and len(due) < limit:
            _, _, execution_id, timer = heapq.heappop(self._heap)
            self._held.discard((execution_id, timer))
            due.append((execution_id, timer))
        return due

    def clear(self) -> None:
        self._heap.clear()
        self._held.clear()


class RocksIndex:
    """A RocksDB database used as a sorted set of (due, execution, timer).

    Taking timers deletes them from the front; a scan from the first key would step over
    every deleted one until compaction drops them, so scans start at `_lower`, a key at
    or before the earliest timer held."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lower = b""
        self._db = self._open()

    def add(self, execution_id: str, timer: Timer) -> None:
        key = _key(execution_id, timer)
        self._db.put(key, b"")
        self._lower = min(self._lower, key)

    def next_due(self) -> datetime | None:
        first = self._first(1)
        return _decode(first[0])[1].due if first else None

    def take_due(self, now: datetime, limit: int) -> list[tuple[str, Timer]]:
        bound = _DUE.pack(_micros(now) + 1)
        keys = [key for key in self._first(limit) if key < bound]
        if not keys:
            return []
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key in keys:
            batch.delete(key)
        self._db.write(batch)
        self._lower = keys[-1]
        return [_decode(key) for key in keys]

    def clear(self) -> None:
        self.close()
        self._lower = b""
        self._db = self._open()

    def close(self) -> None:
        self._db.close()

    def _open(self) -> rocksdict.Rdict:
        # Derived data (see the module's text): a process starts, and a clear restarts,
        # from an empty database without a write-ahead log.
        shutil.rmtree(self._path, ignore_errors=True)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = rocksdict.Rdict(str(self._path), options=rocks_options())
        writes = rocksdict.WriteOptions()
        writes.disable_wal = True
        db.set_write_options(writes)
        return db

    def _first(self, limit: int) -> list[bytes]:
        keys = []
        iterator = self._db.iter()
        iterator.seek(self._lower)
        while iterator.valid() and len(keys) < limit:
            keys.append(iterator.key())
            iterator.next()
        return keys


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _key(execution_id: str, timer: Timer) -> bytes:
    rest = orjson.dumps([execution_id, str(timer.kind), timer.task_run_id, timer.attempt])
    return _DUE.pack(max(0, _micros(timer.due))) + rest


def _decode(key: bytes) -> tuple[str, Timer]:
    (micros,) = _DUE.unpack_from(key)
    execution_id, kind, task_run_id, attempt = orjson.loads(key[_DUE.size :])
    due = _EPOCH + timedelta(microseconds=micros)
    return execution_id, Timer(due, TimerKind(kind), task_run_id, attempt)
