"""Virtualenvs for the `dependencies` of python tasks, built once and shared.

A task that lists dependencies runs in a virtualenv holding exactly them. The virtualenv
lives in the workers' cache (`HEADRACE_VENV_CACHE`, default `$XDG_CACHE_HOME/headrace/venvs`,
else `~/.cache/headrace/venvs`), in a directory named after a hash of the sorted
requirement lines and of the Python it is made from. Every attempt, of any flow, that
needs the same requirements on the same Python uses it as it is: the first one builds
it, the others find it ready in milliseconds.

Building: the stdlib's `python -m venv --without-pip`, then the worker's own pip installs
into it (`pip --python <venv>`), its output streamed into the task's logs as it goes. The
virtualenv gets no pip of its own: it is shared, so nothing should install into it after
it is built (and ensurepip would add seconds to every build).

Concurrency: one build at a time per virtualenv, across every worker process of the
machine, through an exclusive `flock` on `<hash>.lock` beside it; the others wait for the
lock (cancellably), then find the virtualenv ready. It is ready once its marker file
exists, written last: a build that fails, is cancelled or dies with its worker leaves no
marker, its directory is removed (or, after a crash, by the next build), and nobody ever
runs in half a virtualenv. The directory is built in place, not renamed into place: a
virtualenv holds its own absolute path (script shebangs, `activate`), which a rename
would break.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from headrace.connectors._process import run_process
from headrace.connectors.base import TaskContext, TaskFailed
from headrace.messages import LogLevel

CACHE_ENV = "HEADRACE_VENV_CACHE"
READY_MARKER = ".headrace-ready"
REQUIREMENTS_FILE = "headrace-requirements.txt"
# How often a waiting attempt tries the lock: a build takes seconds, so this is noise.
LOCK_POLL_S = 0.05
# How many of pip's error lines a failed install reports.
ERROR_LINES = 5
PIP_WITH_PYTHON_OPTION = (22, 3)  # `pip --python`: installs into another interpreter


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where virtualenvs are kept: `HEADRACE_VENV_CACHE`, else the user's cache folder."""
    configured = environ.get(CACHE_ENV, "")
    if configured:
        return Path(configured).expanduser()
    cache_home = environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    base = Path(cache_home) if os.path.isabs(cache_home) else Path.home() / ".cache"
    return base / "headrace" / "venvs"


def requirement_lines(*groups: Sequence[str]) -> list[str]:
    """The requirement lines of `groups` (`dependencies`, `requirements`), sorted and
    without duplicates: the order a flow lists them in does not make another venv."""
    return sorted({line.strip() for group in groups for line in group if line.strip()})


def environment_key(requirements: Sequence[str]) -> str:
    """The cache directory's name for `requirements` on this worker's Python.

    The base interpreter's location is part of it: a virtualenv runs the interpreter it
    was made from, by path."""
    identity = {
        "requirements": list(requirements),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "base": sys.base_prefix,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return digest[:32]  # short: shebangs that name the venv have a length limit


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


async def ensure_virtualenv(
    requirements: Sequence[str], context: TaskContext, env: Mapping[str, str]
) -> Path:
    """The ready virtualenv holding `requirements` (lines of a requirements file),
    built now if no attempt built it before. `env`: pip's environment (the task's, where
    a flow sets `PIP_INDEX_URL` or a proxy).

    Raises `TaskFailed` with pip's last error lines if the install fails.
    """
    root = cache_root()
    venv = root / environment_key(requirements)
    if (venv / READY_MARKER).is_file():
        await context.info(f"dependencies: using the virtualenv {venv}")
        return venv
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskFailed(
            f"dependencies: cannot create the virtualenv cache {root} ({CACHE_ENV}): {exc}"
        ) from exc
    async with _build_lock(root / f"{venv.name}.lock", context):
        if (venv / READY_MARKER).is_file():  # built while this attempt waited
            await context.info(f"dependencies: using the virtualenv {venv}")
            return venv
        await _build(venv, requirements, context, env)
    return venv


@contextlib.asynccontextmanager
async def _build_lock(path: Path, context: TaskContext) -> AsyncIterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    await context.info(
                        "dependencies: waiting for another attempt that installs the same ones"
                    )
                    told = True
                # Polled rather than a blocking flock in a thread: a kill must be able to
                # end the wait, and a thread blocked in flock cannot be cancelled.
                await asyncio.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # releases the lock; so does the death of the process


async def _build(
    venv: Path, requirements: Sequence[str], context: TaskContext, env: Mapping[str, str]
) -> None:
    _check_pip()
    await _discard(venv)  # the leftover of a build whose worker died
    await context.info(
        f"dependencies: installing {', '.join(requirements)} into a new virtualenv {venv}"
    )
    started = time.monotonic()
    stderr: deque[str] = deque(maxlen=50)

    async def tee(level: LogLevel, message: str) -> None:
        if level is LogLevel.WARN and message.strip():
            stderr.append(message.rstrip())
        await context.log_sink(level, message)

    logging_context = dataclasses.replace(context, log_sink=tee)
    requirements_file = venv / REQUIREMENTS_FILE
    step = "creating the virtualenv"
    try:
        await run_process(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            logging_context,
            env=env,
            cwd=context.workdir,
        )
        requirements_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        step = "installing them with pip"
        await run_process(
            [
                sys.executable,
                *("-m", "pip", "--python", str(python_of(venv)), "install"),
                *("--disable-pip-version-check", "--no-input", "--progress-bar", "off"),
                *("-r", str(requirements_file)),
            ],
            logging_context,
            env=env,
            cwd=context.workdir,
        )
        # Last: the marker is what makes the virtualenv usable by every attempt.
        (venv / READY_MARKER).write_text(f"{time.time()}\n", encoding="utf-8")
    except BaseException as exc:
        await _discard(venv)
        if isinstance(exc, TaskFailed):
            reason = _error_lines(list(stderr)) or str(exc)
            status = str(exc).split(":", 1)[0]  # "exit code 1"; its last line is in `reason`
            raise TaskFailed(f"dependencies: {step} failed ({status}):\n{reason}") from None
        raise
    await context.info(f"dependencies: installed in {time.monotonic() - started:.1f} s")


def _check_pip() -> None:
    """The worker's pip must install into another interpreter (`--python`: pip 22.3)."""
    try:
        version = importlib.metadata.version("pip")
    except importlib.metadata.PackageNotFoundError:
        version = None
    major_minor = tuple(int(part) for part in (version or "0.0").split(".")[:2] if part.isdigit())
    if major_minor < PIP_WITH_PYTHON_OPTION:
        found = f"pip {version}" if version else "no pip"
        raise TaskFailed(
            f"dependencies need pip 22.3 or later in the worker's Python ({sys.executable}),"
            f" which has {found}: install or upgrade pip there"
        )


def _error_lines(stderr: list[str]) -> str:
    """pip's account of a failure: from its first "ERROR:" line on (the hints after it
    included), else its last lines; at most ERROR_LINES."""
    first_error = next((i for i, line in enumerate(stderr) if line.startswith("ERROR:")), None)
    lines = stderr[first_error:] if first_error is not None else stderr
    return "\n".join(lines[:ERROR_LINES] if first_error is not None else lines[-ERROR_LINES:])


async def _discard(venv: Path) -> None:
    """Remove a virtualenv that is not ready. Renamed away first (instant, atomic), so no
    build or attempt ever meets part of it, then removed off the event loop."""
    if not venv.exists():
        return
    trash = venv.with_name(f"{venv.name}.discarded-{uuid.uuid4().hex[:8]}")
    try:
        venv.rename(trash)
    except OSError:
        trash = venv
    # Shielded: a second cancellation leaves the removal running in its thread.
    await asyncio.shield(asyncio.to_thread(shutil.rmtree, trash, ignore_errors=True))
