"""Waiting on a condition in integration tests: poll, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    """Poll `condition` until it gives a truthy value, and return that value; fail the
    test once `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value
