"""`shell`: run commands in a shell; output lines become log lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from headrace.connectors._process import (
    ENV_DESCRIPTION,
    ProcessOutputs,
    child_environment,
    run_process,
)
from headrace.connectors.base import ConnectorProperties, TaskContext

SCRIPT_NAME = ".headrace-commands.sh"


class ShellProperties(ConnectorProperties):
    commands: list[str] = Field(
        min_length=1,
        description="Run in order as one `/bin/sh` script with `set -e`: the first failing"
        " command ends the task.",
    )
    env: dict[str, str] = Field(default_factory=dict, description=ENV_DESCRIPTION)
    working_directory: str | None = Field(
        default=None,
        alias="workingDirectory",
        description="Where the commands run; default a fresh temporary directory per"
        " attempt, removed afterwards.",
    )


class ShellConnector:
    """Runs `commands` with `/bin/sh -e`.

    stdout lines are logged at INFO and stderr lines at WARN, as they come. A non-zero
    exit fails the attempt with "exit code N: <last stderr line>". A timeout, a kill or a
    worker shutdown ends the whole process group.
    """

    Properties = ShellProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.shell.Commands",)

    async def run(self, properties: ShellProperties, context: TaskContext) -> dict[str, Any]:
        # The script goes to the attempt's own directory, never into a user's working
        # directory; a file (not `sh -c`) has no argument-length limit.
        script = context.workdir / SCRIPT_NAME
        script.write_text("set -e\n" + "\n".join(properties.commands) + "\n")
        cwd = Path(properties.working_directory or context.workdir)
        return await run_process(
            ["/bin/sh", str(script)], context, env=child_environment(properties.env), cwd=cwd
        )
