"""Deterministic ids: the same execution replayed gives the same ids, byte for byte.

The core never draws random numbers, so every id it mints is a hash of ids it was given
(the execution id, a task position, a sequence number). blake2b's 128 bits make a
collision across all executions as unlikely as with a random UUID.
"""

from __future__ import annotations

from hashlib import blake2b

from headrace.ids import base62

_DIGEST_SIZE = 16  # bytes: 128 bits, like a UUID


def derive_id(*parts: str | int) -> str:
    """A short base62 id derived from `parts` (order matters)."""
    # "\x1f" (unit separator) cannot appear in our ids, so ("a", "bc") != ("ab", "c").
    data = "\x1f".join(str(part) for part in parts).encode()
    return base62(int.from_bytes(blake2b(data, digest_size=_DIGEST_SIZE).digest(), "big"))


def task_run_id(
    execution_id: str,
    task_id: str,
    parent_task_run_id: str | None = None,
    iteration: int | None = None,
    generation: int = 0,
) -> str:
    """The run of task `task_id` under its parent run (and for-each item).

    `generation` counts restarts for the `errors`/`finally` branches, which run afresh
    after each restart.
    """
    return derive_id(
        execution_id, "taskrun", task_id, parent_task_run_id or "", iteration or 0, generation
    )


def child_execution_id(execution_id: str, task_run_id: str, attempt: int) -> str:
    """The execution a `flow.subflow` task run starts (one per attempt: restarts)."""
    return derive_id(execution_id, "subflow", task_run_id, attempt)


def command_id(execution_id: str, *parts: str | int) -> str:
    """An `ExecutionCommand` or trigger event id minted by the core."""
    return derive_id(execution_id, "command", *parts)


def log_id(execution_id: str, seq: int, ordinal: int) -> str:
    """The `ordinal`-th log line emitted by the step that ended at event `seq`."""
    return derive_id(execution_id, "log", seq, ordinal)
