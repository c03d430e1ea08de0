"""Helpers for code running inside a `python` (or `shell`) task.

Usage in a `python` task's script::

    from headrace.task import outputs

    rows = load()
    outputs(rows=len(rows), table="events")   # later tasks read {{ outputs.<task>.rows }}

`outputs(**values)` prints one line `::{"outputs": {...}}::` to stdout, the convention the
worker (and Kestra) reads; the worker merges it into the task's outputs instead of logging
it. Call it as often as you like: later values win per key. Values must be JSON-serialisable.
A shell task can do the same with `echo '::{"outputs": {"key": "value"}}::'`.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def outputs(**values: Any) -> None:
    """Emit `values` as outputs of the running task."""
    line = json.dumps({"outputs": values}, separators=(",", ":"))
    sys.stdout.write(f"::{line}::\n")
    sys.stdout.flush()
