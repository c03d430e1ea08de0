"""Flow triggers that wait for several upstream flows: their windows and progress, pure.

A flow trigger whose `preconditions.flows` lists several distinct conditions fires once
every condition was met by an upstream execution's end within one time window (Kestra's
semantics for `preconditions`). This module decides which window an end falls in, what
counting that end does to the window's progress, and which id a firing gets. It reads no
clock and does no I/O: time is the upstream's end, carried in the event, so a replayed
end lands in the same window and names the same execution. `flow_triggers` stores the
progress in PostgreSQL (`headrace.db.flow_windows`) around these functions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from headrace.flow.triggers import SLIDING_WINDOW, Preconditions, TimeWindow

Json = dict[str, Any]

# DURATION_WINDOW windows are consecutive from here (then shifted by `windowAdvance`):
# a window that divides a day starts at midnight UTC, as Kestra documents.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A SLIDING_WINDOW has no fixed start: its progress is one record per trigger, filed here.
SLIDING_START = EPOCH


@dataclass(frozen=True, slots=True)
class WindowBounds:
    start: datetime
    end: datetime | None  # exclusive; None for a sliding window, which never closes


def window_bounds(window: TimeWindow, at: datetime) -> WindowBounds:
    """The window an upstream end at `at` counts in."""
    if window.type == SLIDING_WINDOW:
        return WindowBounds(SLIDING_START, None)
    origin = EPOCH + (window.window_advance or timedelta(0))
    start = origin + ((at - origin) // window.window) * window.window
    return WindowBounds(start, start + window.window)


@dataclass(frozen=True, slots=True)
class UpstreamEnd:
    """One end of an upstream execution, as much of it as a downstream's `trigger` shows."""

    execution_id: str
    end: int  # the execution's state changes at this end: a restarted one ends again
    namespace: str
    flow_id: str
    flow_revision: int
    state: str
    ended_at: datetime
    outputs: Json
    labels: dict[str, str]
    chain: tuple[str, ...]  # the flows that led to it, itself last (see CHAIN_LIMIT)

    @property
    def key(self) -> str:
        return f"{self.execution_id}#{self.end}"

    def to_json(self) -> Json:
        return {
            "executionId": self.execution_id,
            "end": self.end,
            "namespace": self.namespace,
            "flowId": self.flow_id,
            "flowRevision": self.flow_revision,
            "state": self.state,
            "endedAt": self.ended_at.isoformat(),
            "outputs": self.outputs,
            "labels": self.labels,
            "chain": list(self.chain),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpstreamEnd:
        return cls(
            execution_id=data["executionId"],
            end=int(data["end"]),
            namespace=data["namespace"],
            flow_id=data["flowId"],
            flow_revision=int(data["flowRevision"]),
            state=data["state"],
            ended_at=datetime.fromisoformat(data["endedAt"]),
            outputs=dict(data["outputs"]),
            labels=dict(data["labels"]),
            chain=tuple(data["chain"]),
        )


@dataclass(frozen=True, slots=True)
class WindowStep:
    """A window's progress after counting one end, and what that end fired."""

    satisfied: dict[str, UpstreamEnd]  # condition key -> the end that met it
    fired: tuple[UpstreamEnd, ...] | None  # one per condition, in listed order


def count_end(
    satisfied: Mapping[str, UpstreamEnd],
    preconditions: Preconditions,
    met: Collection[str],
    end: UpstreamEnd,
) -> WindowStep:
    """Count `end`, which meets the conditions `met`, in a window whose progress is
    `satisfied`. Fires when every condition is met; each condition keeps its newest end.
    """
    conditions = list(preconditions.conditions())
    # Progress on a condition the flow no longer declares counts for nothing.
    progress = {key: held for key, held in satisfied.items() if key in conditions}
    changed = False
    for key in met:
        held = progress.get(key)
        # An end older than the one held (ends read out of order) changes nothing.
        if key in conditions and (held is None or held.ended_at <= end.ended_at):
            progress[key] = end
            changed = True
    window = preconditions.time_window
    if window.type == SLIDING_WINDOW and progress:
        newest = max(held.ended_at for held in progress.values())
        progress = {k: h for k, h in progress.items() if h.ended_at >= newest - window.window}
    if not changed or any(key not in progress for key in conditions):
        return WindowStep(progress, None)
    fired = tuple(progress[key] for key in conditions)
    return WindowStep({} if preconditions.reset_on_success else progress, fired)


def firing_cause(window_start: datetime, fired: Sequence[UpstreamEnd]) -> tuple[str, ...]:
    """What a firing's execution id derives from: its window and its set of upstream
    ends. Counting the same ends again (a replay after a crash) gives the same id."""
    return ("flows", window_start.isoformat(), *sorted({upstream.key for upstream in fired}))
