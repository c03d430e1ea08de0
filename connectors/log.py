"""`log`: write one message to the execution's logs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.messages import LogLevel


class LogProperties(ConnectorProperties):
    message: str | list[str] = Field(
        description="The text to log, or a list of texts logged one line each (Kestra's);"
        " expressions are rendered before."
    )
    level: LogLevel = Field(default=LogLevel.INFO, description="The line's level.")


class LogConnector:
    """Logs `message` (each of them, for a list) at `level`. It has no outputs."""

    Properties = LogProperties
    aliases = ("io.kestra.plugin.core.log.Log", "io.kestra.core.tasks.log.Log")
    uses_workdir = False

    async def run(self, properties: LogProperties, context: TaskContext) -> dict[str, Any]:
        messages = properties.message
        for message in [messages] if isinstance(messages, str) else messages:
            await context.log(properties.level, message)
        return {}
