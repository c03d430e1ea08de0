"""Whether a failed attempt gets another one, and after how long; which `retry` decides.

Kestra's rules (`ExecutorService.handleChildWorkerTaskResult`, `TaskRun.nextRetryDate`,
`ExecutionService.nextRetryDate`), which these follow:

- The `retry` that governs a failed task run is the task's own, else that of the closest
  flowable task around it that has one, else the flow's `retry`.
- RETRY_FAILED_TASK counts the task run's attempts; CREATE_NEW_EXECUTION counts the
  executions of the chain (the first one is attempt 1), and its `maxDuration` runs from
  the first execution's creation.
- `warningOnRetry` is read from the task's own `retry` only (Kestra's worker reads
  `task.getRetry()`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from headrace.flow.model import RetryBehavior, RetryPolicy, Task

RETRY_KEYS = ("retryOf", "originalId", "attempt", "originalCreatedAt")
RETRIED_AS = "retriedAs"
"""Set in the `trigger` of an execution that CREATE_NEW_EXECUTION retried, naming the
new one: the end of such an execution is not the end of its chain (Kestra's RETRIED), so
Flow triggers and `stopAfter` pass it by."""


def was_retried(trigger: dict[str, Any]) -> bool:
    """Whether an ended execution was retried as a new one (its end is not final)."""
    return RETRIED_AS in trigger


"""What a CREATE_NEW_EXECUTION retry adds to the new execution's `trigger`: the failed
execution, the first one of the chain, this one's number in it, and when the chain began."""


@dataclass(frozen=True, slots=True)
class Governing:
    """The `retry` that applies to a task run, and whether it is the task's own."""

    policy: RetryPolicy
    own: bool

    @property
    def new_execution(self) -> bool:
        return self.policy.behavior is RetryBehavior.CREATE_NEW_EXECUTION


@dataclass(frozen=True, slots=True)
class Chain:
    """Where an execution stands among the executions CREATE_NEW_EXECUTION made."""

    attempt: int  # 1 for the first execution
    original_id: str
    original_created_at: datetime


def governing_retry(
    task: Task, ancestors: Iterable[Task], flow_retry: RetryPolicy | None
) -> Governing | None:
    """The task's `retry`, else the closest ancestor's (closest first), else the flow's."""
    if task.retry is not None:
        return Governing(task.retry, own=True)
    for ancestor in ancestors:
        if ancestor.retry is not None:
            return Governing(ancestor.retry, own=False)
    return None if flow_retry is None else Governing(flow_retry, own=False)


def retry_delay(
    policy: RetryPolicy | None,
    failed_attempt: int,
    first_started_at: datetime,
    now: datetime,
    seed: str = "",
) -> timedelta | None:
    """The wait before the next attempt, or None when the task run has to fail.

    `maxDuration` counts from the first attempt's start to the start of the next one: a
    retry that could only begin after the deadline is not scheduled (as Kestra does).
    """
    if policy is None or failed_attempt >= policy.attempt_limit:
        return None
    delay = policy.delay_before(failed_attempt + 1, seed)
    if policy.max_duration is not None and now + delay - first_started_at > policy.max_duration:
        return None
    return delay


def chain_of(execution_id: str, trigger: dict[str, Any], created_at: datetime) -> Chain:
    """The chain an execution belongs to, read from its trigger (itself when it starts one)."""
    attempt = trigger.get("attempt")
    original = trigger.get("originalId")
    began = trigger.get("originalCreatedAt")
    if not (isinstance(attempt, int) and isinstance(original, str) and isinstance(began, str)):
        return Chain(1, execution_id, created_at)
    try:
        return Chain(attempt, original, datetime.fromisoformat(began))
    except ValueError:  # written by someone else: this execution starts its own chain
        return Chain(1, execution_id, created_at)


def retried_trigger(trigger: dict[str, Any], failed_id: str, chain: Chain) -> dict[str, Any]:
    """The trigger of the execution that retries `failed_id`: its own, kept for
    expressions (`trigger.date`…), plus the chain. A subflow's child becomes a replay on
    its own: its parent already has the failed child's end."""
    kept = {
        k: v for k, v in trigger.items() if k not in ("seed", RETRIED_AS) and k not in RETRY_KEYS
    }
    if kept.get("type") == "subflow":
        kept = {k: v for k, v in kept.items() if k not in ("parentExecutionId", "parentTaskRunId")}
        kept["type"] = "replay"
    return {
        **kept,
        "retryOf": failed_id,
        "originalId": chain.original_id,
        "attempt": chain.attempt + 1,
        "originalCreatedAt": chain.original_created_at.isoformat(),
    }


def format_duration(value: timedelta) -> str:
    """`0.1s`, `30s`, `3600s`: seconds to the millisecond, trailing zeros dropped."""
    return f"{value.total_seconds():.3f}".rstrip("0").rstrip(".") + "s"
