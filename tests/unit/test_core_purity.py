"""The core stays pure: no I/O libraries, no clock, no randomness."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import headrace.core

CORE_DIR = Path(headrace.core.__file__).parent
IO_LIBRARIES = ("faust", "aiokafka", "asyncpg", "aiohttp")
# Reading the clock or a random source makes replays diverge; time and ids come in.
FORBIDDEN_CALLS = ("datetime.now", "datetime.utcnow", "time.time", "random", "uuid", "os.urandom")


def test_importing_the_core_loads_no_io_library():
    probe = (
        "import sys, headrace.core; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r}))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_source_reads_no_clock_and_no_random_source():
    for path in CORE_DIR.glob("*.py"):
        source = path.read_text()
        for call in FORBIDDEN_CALLS:
            assert f"{call}(" not in source and f"import {call}" not in source, (path, call)
