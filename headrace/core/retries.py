"""Whether a failed attempt gets another one, and after how long."""

from __future__ import annotations

from datetime import datetime, timedelta

from headrace.flow.model import RetryPolicy


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
    if policy is None or failed_attempt >= policy.max_attempts:
        return None
    delay = policy.delay_before(failed_attempt + 1, seed)
    if policy.max_duration is not None and now + delay - first_started_at > policy.max_duration:
        return None
    return delay


def format_duration(value: timedelta) -> str:
    """`0.1s`, `30s`, `3600s`: seconds to the millisecond, trailing zeros dropped."""
    return f"{value.total_seconds():.3f}".rstrip("0").rstrip(".") + "s"
