"""Deterministic ids: the same execution replayed gives the same ids, byte for byte.

The core never draws random numbers, so every id it mints is a hash of ids it was given
(the execution id, a task position, a sequence number). blake2b's 128 bits make a
collision across all executions as unlikely as with a random UUID.
"""

from __future__ import annotations

from hashlib import blake2b

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGEST_SIZE = 16  # bytes: 128 bits, like a UUID
ID_LENGTH = 22  # base62 digits needed for 128 bits, so every id has the same length
# Two digits per division: id derivation is on the executor's hot path (one per task run).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_PAIR_BASE = len(_PAIRS)


def derive_id(*parts: str | int) -> str:
    """A short base62 id derived from `parts` (order matters)."""
    # "\x1f" (unit separator) cannot appear in our ids, so ("a", "bc") != ("ab", "c").
    data = "\x1f".join(str(part) for part in parts).encode()
    number = int.from_bytes(blake2b(data, digest_size=_DIGEST_SIZE).digest(), "big")
    pairs = []
    for _ in range(ID_LENGTH // 2):
        number, pair = divmod(number, _PAIR_BASE)
        pairs.append(_PAIRS[pair])
    return "".join(reversed(pairs))


def task_run_id(execution_id: str, position: int) -> str:
    """The task run of the task at `position` in the flow's `tasks`."""
    return derive_id(execution_id, "taskrun", position)


def log_id(execution_id: str, seq: int, ordinal: int) -> str:
    """The `ordinal`-th log line emitted by the step that ended at event `seq`."""
    return derive_id(execution_id, "log", seq, ordinal)
