"""`log`: write one message to the execution's logs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.messages import LogLevel


class LogProperties(ConnectorProperties):
    message: str = Field(description="The text to log; expressions are rendered before.")
    level: LogLevel = Field(default=LogLevel.INFO, description="The line's level.")


class LogConnector:
    """Logs `message` at `level`. The simplest task there is; it has no outputs."""

    Properties = LogProperties
    aliases = ("io.kestra.plugin.core.log.Log",)
    uses_workdir = False

    async def run(self, properties: LogProperties, context: TaskContext) -> dict[str, Any]:
        await context.log(properties.level, properties.message)
        return {}
