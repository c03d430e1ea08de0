"""Runs one subprocess for a connector: streams its output as log lines, collects outputs.

Shared by `shell` and `python`. stdout lines become INFO log lines and stderr lines WARN,
as they arrive. A stdout line `::{"outputs": {...}}::` (Kestra's convention) is not logged:
its values are merged into the attempt's outputs. The child runs in its own session, so
cancellation (timeout, shutdown, kill) and the end of the attempt signal the whole process
group: no orphan survives its attempt. With a `process_guard` (the worker's reaper) the
group is registered before the program runs, so it does not survive its worker either.

The child's environment is the task's own `env` (where `{{ secret('NAME') }}` puts a
secret it asked for) on top of the few variables of the worker's that any program needs
(`BASE_VARIABLES`: PATH, HOME, the locale...). Nothing else of the worker's reaches it:
not its configuration, not a credential someone left in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from headrace.connectors.base import ProcessGuard, TaskContext, TaskFailed
from headrace.messages import LogLevel

# Seconds between SIGTERM and SIGKILL when an attempt is cancelled: long enough for a
# script's trap to clean up, short enough that a shutdown grace period is not eaten up.
# (The default: a connector whose program needs longer to stop passes its own.)
TERMINATE_GRACE_S = 2.0
# A line longer than this (bytes) is logged in pieces, so one huge line cannot eat memory.
MAX_LINE_BYTES = 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
STREAM_LIMIT_BYTES = 64 * 1024  # asyncio's default pipe buffer threshold
OUTPUTS_PREFIX = "::"
OUTPUTS_SUFFIX = "::"
# What a task inherits from the worker's environment: where programs are, whose home,
# which language and time zone, where temporary files go. Anything else (proxies, cloud
# credentials) a flow passes explicitly in `env`, for all tasks of a type through
# `pluginDefaults`.
BASE_VARIABLES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM"}
)
BASE_PREFIXES = ("LC_",)  # LC_ALL, LC_CTYPE...
ENV_DESCRIPTION = (
    "The task's environment variables, on top of the worker's PATH, HOME, locale and a few"
    " more; nothing else of the worker's environment reaches the task."
)


class ProcessOutputs(BaseModel):
    """What a task run as a subprocess outputs."""

    model_config = ConfigDict(extra="allow")

    exit_code: int = Field(
        alias="exitCode", description="0: a non-zero exit fails the attempt instead."
    )
    # Any other key: a value printed to stdout as `::{"outputs": {"key": value}}::`
    # (Kestra's convention); such lines are not logged.


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The worker's `BASE_VARIABLES`, plus the task's `env`; Python children stay
    unbuffered."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name in BASE_VARIABLES or name.startswith(BASE_PREFIXES)
    }
    # Without this a Python child buffers stdout in a pipe and nothing streams until exit.
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def parse_outputs_line(line: str) -> dict[str, Any] | None:
    """The outputs carried by a `::{"outputs": {...}}::` line, or None for any other line."""
    if not (line.startswith(OUTPUTS_PREFIX) and line.endswith(OUTPUTS_SUFFIX)) or len(line) < 5:
        return None
    try:
        payload = orjson.loads(line[len(OUTPUTS_PREFIX) : -len(OUTPUTS_SUFFIX)])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("outputs"), dict):
        return None
    return payload["outputs"]


async def _read_lines(
    stream: asyncio.StreamReader, on_line: Callable[[str], Awaitable[None]]
) -> None:
    buffer = b""
    while True:
        chunk = await stream.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            await on_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
        while len(buffer) > MAX_LINE_BYTES:
            piece, buffer = buffer[:MAX_LINE_BYTES], buffer[MAX_LINE_BYTES:]
            await on_line(piece.decode("utf-8", errors="replace"))
    if buffer:
        await on_line(buffer.rstrip(b"\r").decode("utf-8", errors="replace"))


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Reports the child's exit at once: `Process.wait()` also waits for its pipes to close,
    which a background grandchild holding stdout would delay forever."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _spawn(
    argv: list[str], *, env: Mapping[str, str], cwd: Path, guard: ProcessGuard | None
) -> tuple[asyncio.subprocess.Process, _ExitAwareProtocol, asyncio.SubprocessTransport]:
    loop = asyncio.get_running_loop()
    stdin: int = asyncio.subprocess.DEVNULL
    if guard is not None:
        argv, stdin = guard.wrap(argv)
    transport, protocol = await loop.subprocess_exec(
        lambda: _ExitAwareProtocol(STREAM_LIMIT_BYTES, loop),
        *argv,
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,  # its own process group: killpg reaches every descendant
    )
    return asyncio.subprocess.Process(transport, protocol, loop), protocol, transport


def _signal_group(pgid: int, signum: int) -> None:
    # The group may be gone already (normal exit): nothing to do then.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _terminate(
    pid: int,
    protocol: _ExitAwareProtocol,
    transport: asyncio.SubprocessTransport,
    guard: ProcessGuard | None,
    stop_signal: signal.Signals,
    grace_s: float,
) -> None:
    """`stop_signal` (SIGTERM) to the group, then SIGKILL after `grace_s` seconds (or at
    once if the leader left)."""
    _signal_group(pid, stop_signal)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(protocol.exited), grace_s)
    _signal_group(pid, signal.SIGKILL)
    await protocol.exited
    if guard is not None:
        guard.release(pid)
    # Closes our pipe ends even if a process that left the group still holds the others.
    transport.close()


def _refuse_nul(argv: list[str], env: Mapping[str, str]) -> None:
    """A NUL cannot be in a process's arguments or environment: say where it is, rather
    than Python's "embedded null byte"."""
    where = [f"env {name}" for name, value in env.items() if "\0" in name or "\0" in value]
    if any("\0" in arg for arg in argv):
        where.append("the command")
    if where:
        raise TaskFailed(
            f"{', '.join(where)} holds a NUL character, which a process cannot be given: "
            "a secret() marker that did not resolve (its text changed by a filter, or "
            "used outside a task's own properties), or a NUL in the data"
        )


async def run_process(
    argv: list[str],
    context: TaskContext,
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdout_handler: Callable[[str], Awaitable[None]] | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    grace_s: float = TERMINATE_GRACE_S,
) -> dict[str, Any]:
    """Run `argv` to completion; returns the emitted outputs plus `exitCode` (0).

    Raises `TaskFailed("exit code N: <last stderr line>")` on a non-zero exit.
    `stdout_handler`: takes each stdout line instead (no logging, no outputs lines), for a
    program whose output is structured (dbt's JSON log lines). `stop_signal`: the first
    signal of a cancellation, SIGINT for a program that cancels its remote work on Ctrl-C;
    `grace_s`: the seconds it then has to end before SIGKILL.
    """
    outputs: dict[str, Any] = {}
    last_stderr = ""

    async def on_stdout(line: str) -> None:
        emitted = parse_outputs_line(line)
        if emitted is None:
            await context.log(LogLevel.INFO, line)
        else:
            outputs.update(emitted)

    async def on_stderr(line: str) -> None:
        nonlocal last_stderr
        if line.strip():
            last_stderr = line
        await context.log(LogLevel.WARN, line)

    _refuse_nul(argv, env)
    guard = context.process_guard
    # The program runs before the spawn returns (asyncio still connects its pipes): a
    # cancellation in between would leave its group running. So the spawn finishes, and
    # a cancellation that came meanwhile ends the group as one that comes later does.
    spawning = asyncio.ensure_future(_spawn(argv, env=env, cwd=cwd, guard=guard))
    try:
        process, protocol, transport = await asyncio.shield(spawning)
    except OSError as exc:  # a missing working directory, an unusable interpreter
        raise TaskFailed(f"could not start {argv[0]}: {exc}") from exc
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):  # it never started: nothing to end
            process, protocol, transport = await spawning
            await asyncio.shield(
                _terminate(process.pid, protocol, transport, guard, stop_signal, grace_s)
            )
        raise
    assert process.stdout is not None and process.stderr is not None
    readers = [
        asyncio.create_task(_read_lines(process.stdout, stdout_handler or on_stdout)),
        asyncio.create_task(_read_lines(process.stderr, on_stderr)),
    ]
    try:
        # Wait for the exit, but end at once if a reader failed (its log sink raised): the
        # child would otherwise block on a full pipe and never exit.
        waiting: set[asyncio.Future[Any]] = {protocol.exited, *readers}
        while not protocol.exited.done():
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                error = None if finished is protocol.exited else finished.exception()
                if error is not None:
                    raise error
        # Background children may still hold the pipes open: end them with their parent.
        _signal_group(process.pid, signal.SIGKILL)
        if guard is not None:
            guard.release(process.pid)
        await asyncio.gather(*readers)
        code = await process.wait()
    except BaseException:
        # Cancelled (timeout, shutdown) or a log sink failed: the group must not outlive us.
        for reader in readers:
            reader.cancel()
        await asyncio.shield(
            _terminate(process.pid, protocol, transport, guard, stop_signal, grace_s)
        )
        raise
    if code != 0:
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise TaskFailed(f"{reason}: {last_stderr}" if last_stderr else reason)
    return {**outputs, "exitCode": code}
