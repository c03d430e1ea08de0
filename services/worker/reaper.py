"""Task processes die with their worker, however the worker dies (kill -9 included).

A worker starts one reaper: a tiny process in a session of its own, reading a pipe
whose write end only the worker holds. Every task process registers its process group
on that pipe before it runs any task code, and the worker unregisters the group once it
is over. When the pipe reaches end-of-file the worker is gone (the kernel closes a dead
process's files): the reaper SIGKILLs every group still registered, then exits. It
takes milliseconds, while a redelivered request reaches another worker only after the
broker noticed the death (seconds): the orphan is gone before its copy can start.

Registration has no window: a task is started with the pipe as its standard input, as
`/bin/sh -c 'echo +$$ >&0 && exec 0</dev/null && exec "$@"' headrace-task ARGV...`, so
its first process writes its own group id to the pipe, swaps its copy of the pipe for
/dev/null and only then becomes the task's program. (Standard input, because it is the
one descriptor a shell can name at any number: dash knows only 0-9.) While it holds its copy the reaper cannot see
end-of-file: a worker killed between the spawn and the registration still has its task
killed. A task that failed to register (the reaper is gone) exits before running.

The worker also registers each attempt's temporary directory, and unregisters it once
removed: after killing the groups, the reaper removes the directories still registered,
so a worker killed mid-task leaves no attempt's files behind (they may hold what a task
wrote from its secrets). Paths travel hex-encoded: any byte may be in one.

What escapes: a process that leaves its process group (`setsid`, a daemon's double
fork). Only a PID namespace or a cgroup would catch it, and both need privileges a
worker cannot assume (docs/security.md).

This file is also the reaper program itself, run by path with `python -I -S`: standard
library only, so it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# The name the task's first process runs under until it execs the task (`ps` shows it).
TASK_SHELL_NAME = "headrace-task"
# What a line on the pipe says: a process group registered or released, an attempt
# directory to remove should the worker die, or one already removed.
_REGISTERED = "+"
_RELEASED = "-"
_DIRECTORY = "d"
_DIRECTORY_REMOVED = "r"
ATTEMPT_DIRECTORY_PREFIX = "headrace-attempt-"  # the only directories it removes
_PR_SET_DUMPABLE = 4  # prctl option (linux/prctl.h)
# Seconds a stopping worker waits for its reaper to exit after closing the pipe.
EXIT_WAIT_S = 5.0


class ReaperError(Exception):
    """The reaper is gone: task processes would outlive a crash of this worker."""


class Reaper:
    """The worker's side: starts the reaper process, registers nothing itself (tasks do),
    releases groups that ended, and says whether the reaper still runs."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None

    def start(self) -> None:
        read_end, write_end = os.pipe()  # both close-on-exec: no task inherits them
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(Path(__file__).resolve()),
                    str(os.getpid()),
                    tempfile.gettempdir(),  # where attempt directories are made
                ],
                stdin=read_end,
                env={},  # nothing to leak: it holds no configuration and no secret
                start_new_session=True,  # a signal to the worker's group does not reach it
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._fd = write_end

    def wrap(self, argv: list[str]) -> tuple[list[str], int]:
        """`argv` started so that it registers with the reaper first, and the file
        descriptor to give it as standard input (its program gets /dev/null)."""
        if self._fd is None:
            raise ReaperError("the reaper is not started")
        script = f'echo "{_REGISTERED}$$" >&0 && exec 0</dev/null && exec "$@"'
        return ["/bin/sh", "-c", script, TASK_SHELL_NAME, *argv], self._fd

    def release(self, pgid: int) -> None:
        """The group ended (or was killed): the reaper must not signal its id again."""
        self._send(_RELEASED, str(pgid))

    def keep_directory(self, path: Path) -> None:
        """Remove `path` if this worker dies before `forget_directory(path)`."""
        self._send(_DIRECTORY, os.fsencode(path).hex())

    def forget_directory(self, path: Path) -> None:
        self._send(_DIRECTORY_REMOVED, os.fsencode(path).hex())

    def _send(self, kind: str, text: str) -> None:
        line = f"{kind}{text}\n".encode()
        # Only writes of up to PIPE_BUF bytes are atomic: a longer line could interleave
        # with a task's registration. (A temporary directory path of over 2 KB.)
        if self._fd is not None and len(line) <= select.PIPE_BUF:
            # A dead reaper is reported by `check`; what it was told is moot then.
            with contextlib.suppress(BrokenPipeError):
                os.write(self._fd, line)

    def check(self) -> None:
        """Raises `ReaperError` if the reaper exited while the worker runs."""
        if self._process is not None and self._process.poll() is not None:
            raise ReaperError(
                f"the task reaper exited (code {self._process.returncode}): task processes"
                " would outlive a crash of this worker"
            )

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        """Close the pipe: the reaper kills what is still registered (nothing, after a
        clean stop) and exits."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._process is not None:
            try:
                self._process.wait(EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


# --------------------------------------------------------------- the reaper program


def _kill_groups(groups: set[int]) -> int:
    killed = 0
    for pgid in sorted(groups):
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
        except (ProcessLookupError, PermissionError):
            pass  # ended already
    return killed


def _directory(hex_path: str, parent: bytes) -> bytes | None:
    try:
        path = bytes.fromhex(hex_path)
    except ValueError:
        return None
    # Only what a worker makes: a stray line cannot have it remove anything else.
    head, name = os.path.split(path)
    if head == parent and name.startswith(ATTEMPT_DIRECTORY_PREFIX.encode()):
        return path
    return None


def reap(read_fd: int, temp_dir: str = "") -> int:
    """Follow registrations on `read_fd` until end-of-file, then kill the groups and
    remove the attempt directories left (only directories right in `temp_dir`, an
    absolute path). Returns the number of groups killed."""
    parent = os.fsencode(temp_dir) if os.path.isabs(temp_dir) else b""
    groups: set[int] = set()
    directories: set[bytes] = set()
    pending = b""
    while chunk := os.read(read_fd, 4096):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            text = line.decode("ascii", errors="replace")
            kind, rest = text[:1], text[1:]
            if kind in (_DIRECTORY, _DIRECTORY_REMOVED):
                if parent and (path := _directory(rest, parent)) is not None:
                    if kind == _DIRECTORY:
                        directories.add(path)
                    else:
                        directories.discard(path)
            elif rest.isdigit() and int(rest) > 1:
                if kind == _REGISTERED:
                    groups.add(int(rest))
                elif kind == _RELEASED:
                    groups.discard(int(rest))
    killed = _kill_groups(groups)
    for path in directories:  # after the kills: nothing writes into them any more
        shutil.rmtree(path, ignore_errors=True)
    return killed


def main() -> None:
    # Only the end of the pipe ends us: not a Ctrl-C meant for the worker, not a TERM
    # sent to every process of a container before the worker finished its shutdown.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Non-dumpable, as every headrace process: a task of the same user cannot open our
    # end of the pipe through /proc and unregister itself, or hold the pipe open.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes  # here: the worker itself never needs it

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    worker = sys.argv[1] if len(sys.argv) > 1 else "?"
    killed = reap(0, sys.argv[2] if len(sys.argv) > 2 else "")
    if killed:
        print(
            f"headrace task reaper: worker process {worker} is gone; killed {killed} task"
            " process group(s) it left running",
            file=sys.stderr,
            flush=True,
        )


if __name__ == "__main__":
    main()
