"""How a service tells a supervisor (`headrace server local`, tests) that it serves.

The supervisor passes a file path in HEADRACE_READY_FILE; the service touches it once it
is connected and consuming. Without the variable this does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

READY_FILE_ENV = "HEADRACE_READY_FILE"


def mark_ready() -> None:
    path = os.environ.get(READY_FILE_ENV)
    if path:
        Path(path).touch()
