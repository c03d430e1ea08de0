"""Warnings for Kestra `retry` settings that headrace runs a little differently.

Checks of `headrace.flow.warnings` (each yields `(location, message)` from the raw data).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from headrace.flow.limits import MAX_ATTEMPTS
from headrace.flow.task_walk import Loc, every_task


def retry_differences(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Each `retry` (the flow's, and every task's) that headrace honours differently."""
    found: list[tuple[Loc, Any]] = [(("retry",), data.get("retry"))]
    found += [((*loc, "retry"), task.get("retry")) for loc, task in every_task(data)]
    for loc, retry in found:
        if isinstance(retry, dict):
            yield from ((loc, message) for message in _differences(retry))


def _differences(retry: dict[str, Any]) -> Iterator[str]:
    if not any(key in retry for key in ("maxAttempts", "maxAttempt", "maxDuration")):
        yield (
            "neither maxAttempts nor maxDuration: Kestra retries without end, headrace"
            f" stops after {MAX_ATTEMPTS:,} attempts; set maxAttempts or maxDuration"
        )
    if retry.get("behavior") == "CREATE_NEW_EXECUTION":
        yield (
            "CREATE_NEW_EXECUTION: the failed execution ends FAILED (Kestra's RETRIED state"
            " does not exist in headrace) and the new one's `trigger` names it in `retryOf`"
        )
