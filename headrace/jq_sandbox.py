"""Runs the `jq` filter's programs in a child process that can be stopped.

libjq is C code: once a program runs, nothing in this process can interrupt it, and a
short program can run for hours or fill the memory (`combinations(9)`, `"x" * 1e9`).
The executor and the gateway render expressions for everyone, so a program runs in one
long-lived child per process, under a memory limit, and a program that has not answered
within `TIMEOUT_S` gets its child killed (the next call starts a new one). The child has
an empty environment: jq's `env` and `$ENV` see nothing of the service's.

Run as `python -m headrace.jq_sandbox`: requests and answers are JSON lines on its stdin
and stdout.
"""

from __future__ import annotations

import atexit
import os
import resource
import select
import subprocess
import sys
import threading
import time
from typing import Any

import orjson

from headrace.render_budget import RENDER_TIMEOUT_S

TIMEOUT_S = RENDER_TIMEOUT_S
"""Wall time a program may take, as long as a whole render may take."""
MEMORY_BYTES = 512 * 1024 * 1024
"""The child's address space: a program that builds a huge value fails with MemoryError."""
MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Results larger than this, as JSON, are refused (a render's value is smaller still)."""
_START_TIMEOUT_S = 30.0  # the first call waits for Python and libjq to load


class JqSandbox:
    """One child process, shared by the threads of this process (one program at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def run(self, program: str, text: str | None, value: Any) -> list[Any]:
        """The results of `program` on `text` (JSON text) or else `value`; ValueError
        saying why when it fails, is too slow or too large."""
        request = orjson.dumps({"program": program, "text": text, "value": value}) + b"\n"
        with self._lock:
            fresh = self._process is None or self._process.poll() is not None
            if fresh:
                self._start()
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(request)
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):
                self._stop()
                raise ValueError(f"jq {program!r}: the jq process ended; try again") from None
            line = self._read_line(TIMEOUT_S + (_START_TIMEOUT_S if fresh else 0))
            if line is None:
                self._stop()
                raise ValueError(
                    f"jq {program!r} took longer than {TIMEOUT_S:g} s and was stopped:"
                    " transform large data in a task instead"
                )
        answer = orjson.loads(line)
        if "error" in answer:
            raise ValueError(f"jq {program!r}: {answer['error']}")
        return answer["results"]

    def _start(self) -> None:
        self._stop()
        environment = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "headrace.jq_sandbox"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=environment,
            close_fds=True,
        )
        self._buffer = b""

    def _read_line(self, timeout_s: float) -> bytes | None:
        """The next answer line, or None when none came within `timeout_s`."""
        assert self._process is not None and self._process.stdout is not None
        descriptor = self._process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                return None
            chunk = os.read(descriptor, 1 << 16)
            if not chunk:  # the child died (out of memory, killed)
                return orjson.dumps({"error": "the program ran out of memory or crashed"})
            self._buffer += chunk
            if len(self._buffer) > MAX_ANSWER_BYTES + 64:
                return orjson.dumps({"error": "the result is too large"})
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        self._buffer = b""


SANDBOX = JqSandbox()
atexit.register(SANDBOX._stop)


# ------------------------------------------------------------------ the child


def _serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    import jq

    compiled: dict[str, Any] = {}
    for line in sys.stdin.buffer:
        request = orjson.loads(line)
        try:
            program = compiled.get(request["program"])
            if program is None:
                if len(compiled) > 1024:
                    compiled.clear()
                program = compiled[request["program"]] = jq.compile(request["program"])
            if request["text"] is not None:
                results = program.input_text(request["text"]).all()
            else:
                results = program.input_value(request["value"]).all()
            answer = orjson.dumps({"results": results})
            if len(answer) > MAX_ANSWER_BYTES:
                answer = orjson.dumps({"error": "the result is too large"})
        except MemoryError:
            answer = orjson.dumps({"error": "the program needs too much memory"})
        except (ValueError, TypeError) as exc:  # jq's errors; orjson's (an integer > 64 bits)
            answer = orjson.dumps({"error": str(exc)})
        sys.stdout.buffer.write(answer + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    _serve()
