"""The task reaper: a worker's task processes die with it, however the worker dies.

A stand-in worker (a real Python process running `run_process` with a `Reaper`, as the
worker service does) starts a task that leaves a background child, and is killed with
SIGKILL: both task processes must be gone within the deadline, without anything of the
dead worker's own doing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from headrace.services.worker.reaper import (
    ATTEMPT_DIRECTORY_PREFIX,
    TASK_SHELL_NAME,
    Reaper,
    ReaperError,
    reap,
)
from tests.unit.test_connectors import process_alive

DEADLINE_S = 10.0

# The stand-in worker: starts a reaper, then runs one shell task through `run_process`
# that records its own pid and its background child's, and never ends.
STAND_IN_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from headrace.connectors._process import run_process
    from headrace.connectors.base import TaskContext
    from headrace.services.worker.reaper import Reaper

    folder = Path(sys.argv[1])

    async def sink(level, message):
        print(message, flush=True)

    async def main():
        reaper = Reaper()
        reaper.start()
        (folder / "reaper.pid").write_text(str(reaper.pid))
        context = TaskContext("e", "ns", "f", "t", "tr", 1, sink, folder, process_guard=reaper)
        script = (
            "sleep 300 & echo $! > background.pid.tmp && mv background.pid.tmp background.pid;"
            " echo $$ > task.pid.tmp && mv task.pid.tmp task.pid; wait"
        )
        await run_process(["/bin/sh", "-c", script], context, env={"PATH": "/usr/bin:/bin"},
                          cwd=folder)

    asyncio.run(main())
    """
)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def start_stand_in(folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", STAND_IN_WORKER, str(folder)])


def test_task_processes_die_with_a_worker_killed_hard(tmp_path: Path) -> None:
    worker = start_stand_in(tmp_path)
    try:
        wait_for(lambda: (tmp_path / "task.pid").exists(), "the task to start")
        wait_for(lambda: (tmp_path / "background.pid").exists(), "its background child")
        task = int((tmp_path / "task.pid").read_text())
        background = int((tmp_path / "background.pid").read_text())
        reaper = int((tmp_path / "reaper.pid").read_text())
        assert process_alive(task) and process_alive(background)
        # The task runs under its own process group, registered before it ran.
        assert os.getpgid(task) == task and os.getpgid(background) == task
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    wait_for(lambda: not process_alive(task), f"task process {task} to die")
    wait_for(lambda: not process_alive(background), f"background child {background} to die")
    wait_for(lambda: not process_alive(reaper), f"the reaper {reaper} to exit")


def test_a_released_group_is_not_signalled(tmp_path: Path) -> None:
    """After its release a group id may be reused by an unrelated process: the reaper
    must not kill it when the worker dies later."""
    read_end, write_end = os.pipe()
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        os.write(write_end, f"+{bystander.pid}\n-{bystander.pid}\n+999999999\n".encode())
        os.close(write_end)
        assert reap(read_end) == 0  # nothing registered is still running
        assert bystander.poll() is None
    finally:
        os.close(read_end)
        bystander.kill()
        bystander.wait()


def test_registered_groups_are_killed_at_end_of_file() -> None:
    read_end, write_end = os.pipe()
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # Split across writes, with junk the reaper must ignore (never its own group).
        os.write(write_end, f"+{group.pid}".encode())
        os.write(write_end, b"\n+0\n+1\n+x\nnoise\n")
        os.close(write_end)
        assert reap(read_end) == 1
        assert group.wait(DEADLINE_S) == -signal.SIGKILL
    finally:
        os.close(read_end)


def test_attempt_directories_left_registered_are_removed_at_end_of_file(
    tmp_path: Path,
) -> None:
    left = tmp_path / f"{ATTEMPT_DIRECTORY_PREFIX}left\nnewline"  # any byte may be in a path
    (left / "sub").mkdir(parents=True)
    (left / "sub" / "out.txt").write_text("what a task wrote")
    removed = tmp_path / f"{ATTEMPT_DIRECTORY_PREFIX}done"
    removed.mkdir()
    other = tmp_path / "not-an-attempt"
    other.mkdir()
    deeper = tmp_path / "elsewhere" / f"{ATTEMPT_DIRECTORY_PREFIX}x"  # not in the temp dir
    deeper.mkdir(parents=True)
    sneaky = tmp_path / "elsewhere" / ".." / f"{ATTEMPT_DIRECTORY_PREFIX}y"
    (tmp_path / f"{ATTEMPT_DIRECTORY_PREFIX}y").mkdir()
    read_end, write_end = os.pipe()
    try:
        lines = [f"d{os.fsencode(p).hex()}" for p in (left, removed, other, deeper, sneaky)]
        lines += [f"r{os.fsencode(removed).hex()}", "dzz", "d"]
        lines += [f"d{os.fsencode(left.name).hex()}"]  # relative: never
        os.write(write_end, ("\n".join(lines) + "\n").encode())
        os.close(write_end)
        reap(read_end, str(tmp_path))
    finally:
        os.close(read_end)
    assert not left.exists()
    assert removed.exists()  # released: the worker removed it (or will)
    assert other.exists()  # not the prefix a worker uses: never removed
    assert deeper.exists()  # only directories right in the worker's temp dir
    assert (tmp_path / f"{ATTEMPT_DIRECTORY_PREFIX}y").exists()  # no `..` either


async def test_the_wrapper_registers_then_runs_the_program(tmp_path: Path) -> None:
    reaper = Reaper()
    reaper.start()
    try:
        argv, stdin = reaper.wrap(["/bin/sh", "-c", "echo hello world; cat"])
        assert argv[:2] == ["/bin/sh", "-c"] and argv[3] == TASK_SHELL_NAME
        done = subprocess.run(argv, stdin=stdin, capture_output=True, check=True)
        assert done.stdout == b"hello world\n"  # and `cat` read /dev/null, not the pipe
    finally:
        reaper.stop()


def test_a_dead_reaper_is_reported_and_stops_tasks_from_starting(tmp_path: Path) -> None:
    reaper = Reaper()
    reaper.start()
    try:
        reaper.check()  # running: nothing to report
        os.kill(reaper.pid, signal.SIGKILL)
        wait_for(lambda: _exited(reaper), "the reaper to die")
        with pytest.raises(ReaperError, match="task processes would outlive"):
            reaper.check()
        # A task cannot register any more: it ends before running its program.
        argv, stdin = reaper.wrap(["/bin/sh", "-c", f"touch {tmp_path / 'ran'}"])
        assert subprocess.run(argv, stdin=stdin, capture_output=True).returncode != 0
        assert not (tmp_path / "ran").exists()
        reaper.release(12345)  # a release after its death is harmless
    finally:
        reaper.stop()


def _exited(reaper: Reaper) -> bool:
    try:
        reaper.check()
    except ReaperError:
        return True
    return False
