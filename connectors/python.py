"""`python`: run an inline Python script in a subprocess."""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field

from headrace.connectors._process import (
    ENV_DESCRIPTION,
    ProcessOutputs,
    child_environment,
    run_process,
)
from headrace.connectors.base import ConnectorProperties, TaskContext

SCRIPT_NAME = "headrace_script.py"


class PythonProperties(ConnectorProperties):
    script: str = Field(
        description="Python source, run by the worker's own interpreter in the attempt's"
        " fresh temporary directory, which is also the current directory (files next to it"
        " are importable)."
    )
    env: dict[str, str] = Field(default_factory=dict, description=ENV_DESCRIPTION)


class PythonConnector:
    """Runs `script` with the worker's Python interpreter.

    Outputs are the values passed to `headrace.task.outputs(key=value)`. stdout lines are
    logged at INFO and stderr lines at WARN, as they come (the child runs unbuffered). A
    non-zero exit or an uncaught exception fails the attempt with the last stderr line,
    e.g. "exit code 1: ValueError: bad row".
    """

    Properties = PythonProperties
    Outputs = ProcessOutputs
    aliases = ("io.kestra.plugin.scripts.python.Script",)

    async def run(self, properties: PythonProperties, context: TaskContext) -> dict[str, Any]:
        # A file rather than `-c`: tracebacks then show the failing source line.
        script = context.workdir / SCRIPT_NAME
        script.write_text(properties.script)
        return await run_process(
            [sys.executable, str(script)],
            context,
            env=child_environment(properties.env),
            cwd=context.workdir,
        )
