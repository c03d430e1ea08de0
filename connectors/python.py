"""`python`: run an inline Python script in a subprocess.

Properties:
- `script` (string, required): Python source, run by the worker's own interpreter
  (`sys.executable`) in the attempt's fresh temporary directory, which is also the
  current directory (files next to it are importable).
- `env` (map of strings): the task's environment, on top of the worker's PATH, HOME,
  locale and a few more (`_process.BASE_VARIABLES`); nothing else of the worker's
  environment reaches the task.

Outputs:
- `exitCode`: 0 (a non-zero exit or an uncaught exception fails the attempt with the last
  stderr line, e.g. "exit code 1: ValueError: bad row").
- values passed to `headrace.task.outputs(key=value)`, which prints the
  `::{"outputs": {...}}::` line the `shell` task also understands.

stdout lines are logged at INFO and stderr lines at WARN, as they come (the child runs
unbuffered).
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import Field

from headrace.connectors._process import child_environment, run_process
from headrace.connectors.base import ConnectorProperties, TaskContext

SCRIPT_NAME = "headrace_script.py"


class PythonProperties(ConnectorProperties):
    script: str
    env: dict[str, str] = Field(default_factory=dict)


class PythonConnector:
    """Runs `script` with `sys.executable`."""

    Properties = PythonProperties

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
