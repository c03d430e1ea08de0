"""`python` and `python.commands`: run Python code, in a virtualenv of its `dependencies`.

Kestra's `io.kestra.plugin.scripts.python.Script` and `...python.Commands`. `python` stays
the name of the Script form: it is what flows have always used, for inline scripts.

Which Python runs: without `dependencies` or `requirements`, the worker's own interpreter
(its installed packages importable, `headrace.task` among them). With them, a cached
virtualenv holding exactly those (connectors/python_env.py), in which `headrace.task` is
importable too and nothing else of the worker's: that one module is put, alone, on
PYTHONPATH. Either way `python` and `python3` are that Python, first on PATH, for
`beforeCommands` and `commands` alike.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

import headrace.task
from headrace.connectors._process import ProcessOutputs, child_environment
from headrace.connectors.base import TaskContext
from headrace.connectors.python_env import ensure_virtualenv, python_of, requirement_lines
from headrace.connectors.script_task import (
    ScriptTaskProperties,
    local_paths_for_uris,
    run_script,
)

SCRIPT_NAME = "headrace_script.py"
# In the attempt's directory: `bin/` (python wrappers), `lib/` (`headrace.task` alone).
HELPER_DIRECTORY = ".headrace"


def check_requirement(line: str) -> str:
    if "\n" in line or "\r" in line:
        raise ValueError("a requirement holds a line break: give one requirement per item")
    if not line.strip():
        raise ValueError("a requirement is empty")
    return line


Requirement = Annotated[str, AfterValidator(check_requirement)]


class PythonTaskProperties(ScriptTaskProperties):
    """The properties both python task types have."""

    dependencies: list[Requirement] = Field(
        default_factory=list,
        description="pip requirements (`pandas==2.2.2`, `requests>=2.31`), installed once"
        " into a virtualenv that the worker keeps and shares with every task listing the"
        " same ones; the task then runs in it. pip's output goes to the task's logs.",
    )
    requirements: list[Requirement] = Field(
        default_factory=list,
        description="Lines of a requirements file (Kestra's older name for the same):"
        " installed with `dependencies`, into the same virtualenv.",
    )


class PythonProperties(PythonTaskProperties):
    script: str = Field(
        description="Python source, run in the attempt's fresh temporary directory, which"
        " is also the current directory (files next to it, such as `inputFiles`, are"
        " importable)."
    )

    @field_validator("input_files")
    @classmethod
    def _not_the_script(cls, files: dict[str, str]) -> dict[str, str]:
        for path in files:
            if PurePosixPath(path).parts[0] == SCRIPT_NAME:
                raise ValueError(
                    f"inputFiles {path!r}: that name is taken by the task's own script"
                )
        return files


class PythonCommandsProperties(PythonTaskProperties):
    commands: list[str] = Field(
        min_length=1,
        description="Run in order as one `/bin/sh` script with `set -e`, after"
        " `beforeCommands`, with the task's Python first on PATH (`python main.py`, where"
        " `main.py` came from `inputFiles`).",
    )


async def _python_environment(
    properties: PythonTaskProperties, context: TaskContext
) -> tuple[str, dict[str, str]]:
    """The Python the task runs, and the environment its commands get."""
    env = child_environment(properties.env)
    helpers = context.workdir / HELPER_DIRECTORY
    requirements = requirement_lines(properties.dependencies, properties.requirements)
    if requirements:
        venv = await ensure_virtualenv(requirements, context, env)
        python, bin_directory = str(python_of(venv)), venv / "bin"
        library = helpers / "lib"
        _write_task_helper(library)
        env["VIRTUAL_ENV"] = str(venv)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(library), env.get("PYTHONPATH")]))
    else:
        python, bin_directory = sys.executable, helpers / "bin"
        _write_python_wrappers(bin_directory, python)
    env["PATH"] = os.pathsep.join([str(bin_directory), env.get("PATH", os.defpath)])
    return python, env


def _write_task_helper(library: Path) -> None:
    """`headrace.task` alone, importable from `library`: a virtualenv's tasks use it
    without seeing the rest of headrace or the worker's packages."""
    package = library / "headrace"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""headrace\'s helpers for task code."""\n')
    (package / "task.py").write_text(Path(headrace.task.__file__).read_text(encoding="utf-8"))


def _write_python_wrappers(bin_directory: Path, python: str) -> None:
    """`python` and `python3` that run `python`. Scripts, not symbolic links: a link to
    an interpreter inside a virtualenv would not find the virtualenv's packages."""
    bin_directory.mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3"):
        wrapper = bin_directory / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(python)} "$@"\n')
        wrapper.chmod(0o755)


class PythonConnector:
    """Runs `script` with Python: the worker's, or a virtualenv of its `dependencies`.

    Outputs are the values passed to `headrace.task.outputs(key=value)`, and the storage
    URIs of `outputFiles`. stdout lines are logged at INFO and stderr lines at WARN, as they come
    (the child runs unbuffered). A non-zero exit or an uncaught exception fails the
    attempt with the last stderr line, e.g. "exit code 1: ValueError: bad row".
    """

    Properties = PythonProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.python.Script",)

    async def run(self, properties: PythonProperties, context: TaskContext) -> dict[str, Any]:
        python, env = await _python_environment(properties, context)
        # A file rather than `-c`: tracebacks then show the failing source line.
        script = context.workdir / SCRIPT_NAME
        (text,) = await local_paths_for_uris([properties.script], context)
        script.write_text(text, encoding="utf-8")
        body = f"exec {shlex.quote(python)} {shlex.quote(str(script))}"
        return await run_script(
            properties, context, body, cwd=context.workdir, env=env, reserved=[SCRIPT_NAME]
        )


class PythonCommandsConnector:
    """Runs `commands` with `/bin/sh -e`, the task's Python first on PATH.

    The task's Python: the worker's, or a virtualenv of its `dependencies`. Otherwise as
    `python`: `beforeCommands`, `env`, `inputFiles`, `outputFiles`, logs and outputs.
    """

    Properties = PythonCommandsProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.python.Commands",)

    async def run(
        self, properties: PythonCommandsProperties, context: TaskContext
    ) -> dict[str, Any]:
        _, env = await _python_environment(properties, context)
        body = "\n".join(properties.commands)
        return await run_script(properties, context, body, cwd=context.workdir, env=env)
