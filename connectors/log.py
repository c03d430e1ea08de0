"""`log`: write one message to the execution's logs. The simplest task there is.

Properties:
- `message` (string, required): the text to log; expressions are rendered before.
- `level` (TRACE, DEBUG, INFO, WARN, ERROR; default INFO).

Outputs: none (`{}`).
"""

from __future__ import annotations

from typing import Any

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.messages import LogLevel


class LogProperties(ConnectorProperties):
    message: str
    level: LogLevel = LogLevel.INFO


class LogConnector:
    """Logs `message` at `level`."""

    Properties = LogProperties
    uses_workdir = False

    async def run(self, properties: LogProperties, context: TaskContext) -> dict[str, Any]:
        await context.log(properties.level, properties.message)
        return {}
