"""Waiting on a condition in unit tests: poll it, never a bare sleep.

For tests that run a task in the background and act once something happened (a fake
vendor saw the sync, a log line came): the condition is read every few milliseconds,
and a test whose condition never comes true fails after a deadline instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

POLL_S = 0.002  # the tests' fakes answer in microseconds: a short poll keeps them quick
DEADLINE_S = 10.0  # generous: a loaded 2-core CI machine may be slow, never this slow


async def until(
    condition: Callable[[], Any], what: str = "the condition", seconds: float = DEADLINE_S
) -> Any:
    """Poll `condition` until it gives a truthy value, and return that value; fail the
    test, saying `what` it waited for, once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(POLL_S)
    return value
