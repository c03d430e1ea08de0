"""Keeps credentials out of process environments, where any task could read them.

A task runs as its worker's OS user, and a process can read the environment of every
process of its user (`/proc/<pid>/environ`): its parent worker, `headrace server
local` above it, the other services. So no headrace process keeps a credential in its
environment ("sealed" variables: `HEADRACE_SECRET_*`, `HEADRACE_DATABASE_URL` and the
gateway's `HEADRACE_TOKEN`):

- a process that finds some in its environment at start moves them into an anonymous
  in-memory file (memfd) and re-executes itself, same pid and arguments, with an
  environment without them; the new image reads them back and closes the file
  (`seal_process`);
- a supervisor starting a service hands over only what that service needs through such
  a file (`hand_over`): a worker gets the secrets and never the database URL, the
  executor nothing, the other services the database URL and never a secret, and the
  gateway alone its token;
- every such process is made non-dumpable (`PR_SET_DUMPABLE` 0): other processes of
  its user, tasks included, can then read neither its memory nor its open files nor
  its environment. A task running as root can read anything: docs/security.md.

Linux only for the protection; elsewhere values are still moved out of the
environment (through an unlinked temporary file) but the process stays dumpable.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Mapping

import orjson

from headrace.errors import ConfigError

SECRET_PREFIX = "HEADRACE_SECRET_"
DATABASE_URL = "HEADRACE_DATABASE_URL"
API_TOKEN = "HEADRACE_TOKEN"
# The descriptor number of the in-memory file holding a process's sealed values.
SEALED_FD_ENV = "HEADRACE_SEALED_FD"
_PR_SET_DUMPABLE = 4


def is_sealed(name: str) -> bool:
    """Whether the variable `name` holds a credential no environment may keep."""
    return name.startswith(SECRET_PREFIX) or name in (DATABASE_URL, API_TOKEN)


def make_non_dumpable() -> None:
    """Other processes of this user can no longer read this one's memory, files or
    environment through /proc, nor attach a debugger (root still can)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise ConfigError(f"could not make the process non-dumpable: {os.strerror(errno)}")


def _memory_file(values: Mapping[str, str]) -> int:
    """A descriptor of an unnamed file holding `values` (read from its start)."""
    data = orjson.dumps(dict(values))
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("headrace-sealed")  # close-on-exec until handed over
    else:
        with tempfile.TemporaryFile() as file:  # unlinked already
            fd = os.dup(file.fileno())
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_handed_over() -> dict[str, str]:
    """The values a parent (or this process before re-executing) handed over, if any;
    the descriptor is closed and its variable removed."""
    text = os.environ.pop(SEALED_FD_ENV, None)
    if text is None:
        return {}
    try:
        fd = int(text)
        with os.fdopen(fd, "rb", closefd=True) as file:
            values = orjson.loads(file.read())
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"{SEALED_FD_ENV}={text!r}: cannot read the sealed values: {exc}"
        ) from None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise ConfigError(f"{SEALED_FD_ENV}: the sealed values are not a map of text")
    return values


def seal_process() -> dict[str, str]:
    """Call first thing in a long-running headrace process. Returns the sealed values it
    holds (name -> value), which from now on live in its memory only.

    If sealed variables are in the environment, this re-executes the process and does
    not return: the new image calls it again and gets them from the in-memory file.
    """
    make_non_dumpable()
    values = _read_handed_over()
    leaked = {name: value for name, value in os.environ.items() if is_sealed(name)}
    if not leaked:
        return values
    fd = _memory_file({**leaked, **values})
    os.set_inheritable(fd, True)
    env = {name: value for name, value in os.environ.items() if not is_sealed(name)}
    env[SEALED_FD_ENV] = str(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, env)
    except OSError as exc:
        raise ConfigError(
            f"could not restart without credentials in the environment: {exc}"
        ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def split_sealed(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """`env` without its sealed variables, and those variables."""
    kept = {name: value for name, value in env.items() if not is_sealed(name)}
    sealed = {name: value for name, value in env.items() if is_sealed(name)}
    return kept, sealed


def for_service(service: str, sealed: Mapping[str, str]) -> dict[str, str]:
    """What of `sealed` a service gets: a worker runs tasks and never needs the database;
    the executor needs nothing (flows come from the `flows` topic); no other service
    resolves a secret; only the gateway checks the API token."""
    if service == "worker":
        return {name: value for name, value in sealed.items() if name.startswith(SECRET_PREFIX)}
    if service == "executor":
        return {}
    return {
        name: value
        for name, value in sealed.items()
        if not name.startswith(SECRET_PREFIX) and (name != API_TOKEN or service == "gateway")
    }


@contextlib.contextmanager
def hand_over(env: dict[str, str], sealed: Mapping[str, str]):
    """Within the block, `env` names an inheritable in-memory file holding `sealed`;
    yields the descriptors to pass to the child (`pass_fds`). Closed on exit: start
    the child inside the block."""
    if not sealed:
        yield ()
        return
    fd = _memory_file(sealed)
    env[SEALED_FD_ENV] = str(fd)
    try:
        yield (fd,)
    finally:
        os.close(fd)


def secrets_of(sealed: Mapping[str, str]) -> dict[str, str]:
    """The secrets among sealed values, by name (`HEADRACE_SECRET_API_TOKEN` ->
    `API_TOKEN`), as `{{ secret('API_TOKEN') }}` asks for them."""
    return {
        name.removeprefix(SECRET_PREFIX): value
        for name, value in sealed.items()
        if name.startswith(SECRET_PREFIX)
    }
