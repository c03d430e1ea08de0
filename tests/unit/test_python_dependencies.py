"""`dependencies` of the python types: one cached virtualenv per requirement set.

Offline: the dependency is a tiny package directory made here, whose pyproject.toml
names an in-tree build backend that needs nothing to be downloaded, and pip is told
`PIP_NO_INDEX` through the task's `env`. Each test has its own cache (HEADRACE_VENV_CACHE).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from headrace.connectors.python_env import (
    CACHE_ENV,
    READY_MARKER,
    cache_root,
    environment_key,
    requirement_lines,
)
from headrace.states import State
from headrace.testing import run_task
from tests.unit.test_connectors import process_alive, wait_until

OFFLINE = {"PIP_NO_INDEX": "1"}

PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "tinypkg"
version = "0.1"
"""

# A PEP 517 backend in a few lines: builds the wheel by hand, so no setuptools is needed.
# With BLOCK_FILE set it writes its process id there, then waits: a build to kill.
BACKEND = """\
import base64, hashlib, os, time, zipfile

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    block = os.environ.get("BLOCK_FILE")
    if block:
        with open(block, "w") as file:
            file.write(str(os.getpid()))
        time.sleep(300)
    info = "tinypkg-0.1.dist-info"
    files = {
        "tinypkg/__init__.py": "VALUE = 42\\n",
        info + "/METADATA": "Metadata-Version: 2.1\\nName: tinypkg\\nVersion: 0.1\\n",
        info + "/WHEEL": "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[info + "/RECORD"] = "\\n".join(record + [info + "/RECORD,,"]) + "\\n"
    name = "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return name
"""

USES_THE_PACKAGE = """\
import importlib.util, sys
import tinypkg
from headrace.task import outputs
outputs(
    value=tinypkg.VALUE,
    prefix=sys.prefix,
    # Only headrace.task of the worker's: no other package of its environment.
    sees_pydantic=importlib.util.find_spec("pydantic") is not None,
)
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    directory = tmp_path / "tinypkg"
    directory.mkdir()
    (directory / "pyproject.toml").write_text(PYPROJECT)
    (directory / "backend.py").write_text(BACKEND)
    return directory


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "venvs"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def venvs_in(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir() if path.is_dir())


def installed(messages: list[str]) -> bool:
    return any(message.startswith("dependencies: installing") for message in messages)


async def test_concurrent_attempts_build_one_venv_that_later_attempts_reuse(
    package: Path, cache: Path
) -> None:
    properties = {"dependencies": [str(package)], "env": OFFLINE, "script": USES_THE_PACKAGE}
    first, second = await asyncio.gather(
        run_task("python", properties), run_task("python", properties)
    )
    for run in (first, second):
        assert run.state is State.SUCCESS, run.error
        assert (run.outputs["value"], run.outputs["sees_pydantic"]) == (42, False)
    # One built it, streaming pip's output; the other waited for it.
    assert [installed(first.messages), installed(second.messages)].count(True) == 1
    builder, waiter = (first, second) if installed(first.messages) else (second, first)
    assert any("Successfully installed tinypkg-0.1" in line for line in builder.messages)
    [name] = venvs_in(cache)
    venv = cache / name
    assert waiter.messages == [
        "dependencies: waiting for another attempt that installs the same ones",
        f"dependencies: using the virtualenv {venv}",
    ]
    assert first.outputs["prefix"] == second.outputs["prefix"] == str(venv)
    marker = (venv / READY_MARKER).stat()

    # Another attempt, and another type, with the same requirement: no pip, same venv.
    again = await run_task(
        "io.kestra.plugin.scripts.python.Commands",
        {
            "requirements": [f"  {package}  "],
            "env": OFFLINE,
            "beforeCommands": ['test "$(command -v python)" = "$VIRTUAL_ENV/bin/python"'],
            "commands": ["python -c 'import tinypkg; print(tinypkg.VALUE)'"],
        },
    )
    assert again.state is State.SUCCESS, again.error
    assert again.messages == [f"dependencies: using the virtualenv {venv}", "42"]
    assert venvs_in(cache) == [name]
    after = (venv / READY_MARKER).stat()
    assert (after.st_ino, after.st_mtime_ns) == (marker.st_ino, marker.st_mtime_ns)


async def test_a_failed_install_fails_with_pips_error_and_leaves_no_venv(
    tmp_path: Path, cache: Path
) -> None:
    missing = tmp_path / "no-such-package"
    run = await run_task(
        "python", {"dependencies": [str(missing)], "env": OFFLINE, "script": "print('never')"}
    )
    assert run.state is State.FAILED
    assert run.error is not None
    assert run.error.startswith("dependencies: installing them with pip failed (exit code 1):\n")
    assert "ERROR:" in run.error and str(missing) in run.error
    assert "never" not in run.messages
    assert venvs_in(cache) == []


async def test_a_kill_during_the_install_ends_pip_and_leaves_no_venv(
    package: Path, tmp_path: Path, cache: Path
) -> None:
    started = tmp_path / "build-started"
    task = asyncio.create_task(
        run_task(
            "python",
            {
                "dependencies": [str(package)],
                "env": {**OFFLINE, "BLOCK_FILE": str(started)},
                "script": "print('never')",
            },
        )
    )
    await wait_until(lambda: started.exists() and started.read_text(), "the build to start")
    builder = int(started.read_text())
    assert venvs_in(cache) != [] and process_alive(builder)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # pip's whole process group ends, the build backend it started included.
    await wait_until(lambda: not process_alive(builder), f"process {builder} to end")
    assert venvs_in(cache) == []


def test_the_cache_root_is_the_operators_setting_else_the_users_cache_folder() -> None:
    home = Path.home()
    assert cache_root({}) == home / ".cache" / "headrace" / "venvs"
    assert cache_root({"XDG_CACHE_HOME": "/var/cache/w"}) == Path("/var/cache/w/headrace/venvs")
    assert cache_root({"XDG_CACHE_HOME": "relative"}) == home / ".cache" / "headrace" / "venvs"
    setting = {CACHE_ENV: "/srv/venvs", "XDG_CACHE_HOME": "/var/cache/w"}
    assert cache_root(setting) == Path("/srv/venvs")


def test_the_venv_key_is_the_sorted_requirements_on_this_python() -> None:
    one = requirement_lines(["b==2", "a>=1"], ["a>=1"])
    assert one == ["a>=1", "b==2"]
    assert environment_key(one) == environment_key(requirement_lines(["a>=1"], [" b==2"]))
    assert environment_key(one) != environment_key(["a>=1"])
    assert len(environment_key(one)) == 32
