"""Ended executions leave the executor's table after a retention window.

An execution's state stays in the table (and its changelog) while it may still change:
until it ends, and for `retention` after (a restart, or a replay from a task run, needs
its task runs).
Then it is evicted: its state is replaced by a tombstone of a few bytes, which the
changelog's compaction keeps in place of the state. The tombstone keeps the id known, so
a start or a result delivered again for it (a redelivery, a trigger fired twice with the
same derived id) is recognised and ignored, as it would have been with the state; an
operator's command is answered IGNORED, saying why.

Eviction is a timer of the executor's own (`TimerKind.EVICT`, never stored in a state):
pushed when an execution ends and when a recovered partition holds ended executions, it
fires an `ExecutionCommand(TIMER)` like any timer, so the decision is taken by the
partition's owner in its batch, never beside it. Eviction timers have a queue of their
own: a first start after a long outage (or of this release) finds every old execution
due at once, and that backlog must not delay the retries, timeouts and pauses of the
core's timers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from headrace.core.state import Execution, StateDecodeError, Timer, TimerKind
from headrace.messages import CommandKind, ExecutionCommand, Message
from headrace.states import State

DEFAULT_RETENTION = timedelta(days=7)
# Stored like a state of a format no state reaches: an older executor, which does not
# know tombstones, stops on it (a newer format: exit 78, as in a rolling upgrade) rather
# than take it for a corrupt state and drop its events.
TOMBSTONE_FORMAT = 1_000
_PREFIX = b"[%d," % TOMBSTONE_FORMAT


class TombstoneError(StateDecodeError):
    """A table value that starts like a tombstone but is not one (corrupt)."""


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of an evicted execution: how it ended, and its last seq (answers
    to commands repeat it, as for a held execution)."""

    state: State
    seq: int
    ended_at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [TOMBSTONE_FORMAT, self.state.value, self.seq, self.ended_at.isoformat()]
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Tombstone:
        try:
            _, state, seq, ended_at = orjson.loads(raw)
            return cls(State(state), int(seq), datetime.fromisoformat(ended_at))
        except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            raise TombstoneError(f"not a tombstone: {raw[:60]!r}") from exc

    def reason(self) -> str:
        return (
            f"the execution ended {self.state} at {self.ended_at.isoformat()} and its state"
            " was evicted from the executor after the retention window: it can no longer be"
            " restarted, nor replayed from a task run (a replay from the start still works)"
        )


def is_tombstone(raw: bytes | None) -> bool:
    return raw is not None and raw.startswith(_PREFIX)


def eviction_timer(execution: Execution, retention: timedelta) -> Timer | None:
    """The timer that evicts `execution` once it has been ended for `retention`; None
    while it has not ended."""
    if not execution.state.is_terminal or not execution.histories:
        return None
    return Timer(execution.histories[-1].date + retention, TimerKind.EVICT, "", 0)


def evicts(message: Message) -> bool:
    """Whether `message` is an eviction timer firing."""
    return (
        isinstance(message, ExecutionCommand)
        and message.kind is CommandKind.TIMER
        and message.payload.get("timer") == TimerKind.EVICT
    )


def tombstone_if_due(execution: Execution, retention: timedelta, now: datetime) -> Tombstone | None:
    """The tombstone replacing `execution` if it has been ended for `retention` by `now`."""
    timer = eviction_timer(execution, retention)
    if timer is None or timer.due > now:
        return None  # restarted since, or not due yet
    return Tombstone(execution.state, execution.seq, execution.histories[-1].date)
