"""`shell` and `shell.script`: run commands, or a script, with `/bin/sh`.

Kestra's `io.kestra.plugin.scripts.shell.Commands` and `...shell.Script`. `shell` stays
the name of the Commands form: it is what flows have always used, and commands are
what most shell tasks are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from headrace.connectors._process import ProcessOutputs, child_environment
from headrace.connectors.base import TaskContext
from headrace.connectors.script_task import ScriptTaskProperties, run_script


class ShellTaskProperties(ScriptTaskProperties):
    """What both shell task types take."""

    working_directory: str | None = Field(
        default=None,
        alias="workingDirectory",
        description="Where the commands run, and where `inputFiles` and `outputFiles` are;"
        " default a fresh temporary directory per attempt, removed afterwards.",
    )


class ShellProperties(ShellTaskProperties):
    commands: list[str] = Field(
        min_length=1,
        description="Run in order as one `/bin/sh` script with `set -e`, after"
        " `beforeCommands`: the first failing command ends the task.",
    )


class ShellScriptProperties(ShellTaskProperties):
    script: str = Field(
        min_length=1,
        description="Shell source run by `/bin/sh` with `set -e`, after `beforeCommands`, in"
        " the same shell: the first failing command ends the task.",
    )


async def _run_shell(
    properties: ShellTaskProperties, body: str, context: TaskContext
) -> dict[str, Any]:
    cwd = Path(properties.working_directory or context.workdir)
    return await run_script(
        properties, context, body, cwd=cwd, env=child_environment(properties.env)
    )


class ShellConnector:
    """Runs `commands` with `/bin/sh -e`.

    `beforeCommands` run first in the same script. `inputFiles` are written into the
    working directory before, and `outputFiles` stored after a successful run (the output
    `outputFiles` maps each to its storage URI). stdout lines are logged at INFO and stderr lines at
    WARN, as they come. A non-zero exit fails the attempt with "exit code N: <last stderr
    line>". A timeout, a kill or a worker shutdown ends the whole process group.
    """

    Properties = ShellProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.shell.Commands",)

    async def run(self, properties: ShellProperties, context: TaskContext) -> dict[str, Any]:
        return await _run_shell(properties, "\n".join(properties.commands), context)


class ShellScriptConnector:
    """Runs a `script` with `/bin/sh -e`.

    As `shell`, with the script's text instead of a list of commands: `beforeCommands`,
    `env`, `inputFiles`, `outputFiles` and `workingDirectory` work the same.
    """

    Properties = ShellScriptProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.shell.Script",)

    async def run(self, properties: ShellScriptProperties, context: TaskContext) -> dict[str, Any]:
        return await _run_shell(properties, properties.script, context)
