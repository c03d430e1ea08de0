"""Credentials leave process environments: a process re-executes itself without them,
a supervisor hands them over through an in-memory file, and the holder is non-dumpable.

Real processes: each test starts Python children and reads what the kernel shows of them
(/proc/<pid>/environ), as a task would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from headrace.sealed_env import (
    SEALED_FD_ENV,
    for_service,
    hand_over,
    is_sealed,
    secrets_of,
    split_sealed,
)

# Seals itself, then reports what it holds and what the kernel shows of it.
REPORT = textwrap.dedent(
    """
    import ctypes, json, os
    from headrace.sealed_env import seal_process
    values = seal_process()
    dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
    open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    print(json.dumps({
        "pid": os.getpid(),
        "values": values,
        "environ": open("/proc/self/environ", "rb").read().decode(),
        "dumpable": dumpable,
        "fds": open_fds,
    }))
    """
)


def run_report(env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> tuple[int, dict]:
    process = subprocess.Popen(
        [sys.executable, "-c", REPORT], env=env, stdout=subprocess.PIPE, pass_fds=pass_fds
    )
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return process.pid, json.loads(out)


def base_env() -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}


def test_credentials_in_the_environment_are_moved_out_by_a_re_execution() -> None:
    env = {
        **base_env(),
        "HEADRACE_SECRET_API_TOKEN": "tok-5511-sealed",
        "HEADRACE_DATABASE_URL": "postgresql://u:pw-8812@db/headrace",
        "HEADRACE_KAFKA_BOOTSTRAP": "kafka:9092",
    }
    pid, report = run_report(env)
    assert report["pid"] == pid  # the same process, re-executed in place
    assert report["values"] == {
        "HEADRACE_SECRET_API_TOKEN": "tok-5511-sealed",
        "HEADRACE_DATABASE_URL": "postgresql://u:pw-8812@db/headrace",
    }
    assert "tok-5511-sealed" not in report["environ"]
    assert "pw-8812" not in report["environ"]
    assert "HEADRACE_KAFKA_BOOTSTRAP=kafka:9092" in report["environ"]  # settings stay
    assert report["dumpable"] == 0
    assert report["fds"] == [0, 1, 2, 3]  # the in-memory file is closed (3: listdir's own)


def test_a_supervisor_hands_over_only_what_a_service_needs() -> None:
    env, sealed = split_sealed(
        {
            **base_env(),
            "HEADRACE_SECRET_A": "secret-a-value",
            "HEADRACE_DATABASE_URL": "postgresql://db/x",
            "HEADRACE_TOKEN": "api-token",
            "HEADRACE_PARTITIONS": "4",
        }
    )
    assert sealed == {
        "HEADRACE_SECRET_A": "secret-a-value",
        "HEADRACE_DATABASE_URL": "postgresql://db/x",
        "HEADRACE_TOKEN": "api-token",
    }
    assert for_service("worker", sealed) == {"HEADRACE_SECRET_A": "secret-a-value"}
    assert for_service("indexer", sealed) == {"HEADRACE_DATABASE_URL": "postgresql://db/x"}
    assert for_service("executor", sealed) == {}
    assert for_service("gateway", sealed) == {
        "HEADRACE_DATABASE_URL": "postgresql://db/x",
        "HEADRACE_TOKEN": "api-token",
    }
    with hand_over(env, for_service("worker", sealed)) as fds:
        assert env[SEALED_FD_ENV] == str(fds[0])
        _, report = run_report(env, pass_fds=fds)
    assert report["values"] == {"HEADRACE_SECRET_A": "secret-a-value"}
    assert "secret-a-value" not in report["environ"] and "postgresql" not in report["environ"]
    assert report["fds"] == [0, 1, 2, 3]
    assert secrets_of(report["values"]) == {"A": "secret-a-value"}


def test_which_variables_are_sealed() -> None:
    assert is_sealed("HEADRACE_SECRET_X") and is_sealed("HEADRACE_DATABASE_URL")
    assert is_sealed("HEADRACE_TOKEN")
    assert not is_sealed("HEADRACE_KAFKA_BOOTSTRAP") and not is_sealed("SECRET")


def _python_for(user: int | None) -> str:
    """An interpreter `user` may run: ours is under /root when the tests run as root."""
    if user is None:
        return sys.executable
    system = shutil.which("python3", path="/usr/bin:/bin")
    assert system is not None, "a system python3 is needed to run a process as nobody"
    return system


# Holds a marker in its environment, optionally turns non-dumpable (the call
# `make_non_dumpable` makes), then waits to be read.
HOLDER = textwrap.dedent(
    """
    import ctypes, sys, time
    if sys.argv[1] == "sealed":
        assert ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE 0
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("mode", ["plain", "sealed"])
def test_a_non_dumpable_process_hides_its_environment_from_its_own_user(
    mode: str, tmp_path: Path
) -> None:
    """What a task (same user, not root) can read of its worker. As root, the check
    runs both processes as `nobody`: root itself reads everything (docs/security.md)."""
    user = 65534 if os.geteuid() == 0 else None
    python = _python_for(user)
    holder = subprocess.Popen(
        [python, "-c", HOLDER, mode],
        env={"MARKER": "marker-4471"},
        stdout=subprocess.PIPE,
        user=user,
        group=user,
        cwd="/",
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        reader = subprocess.run(
            [python, "-c", f"print(open('/proc/{holder.pid}/environ').read())"],
            capture_output=True,
            user=user,
            group=user,
            cwd="/",
            timeout=30,
        )
    finally:
        holder.kill()
        holder.wait()
    if mode == "plain":
        assert b"marker-4471" in reader.stdout
    else:
        assert reader.returncode != 0 and b"PermissionError" in reader.stderr
        assert b"marker-4471" not in reader.stdout
