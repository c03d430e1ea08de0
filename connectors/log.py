"""`log`: write one message to the execution's logs. The simplest task there is."""

from __future__ import annotations

from typing import Any

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.messages import LogLevel


class LogProperties(ConnectorProperties):
    message: str
    level: LogLevel = LogLevel.INFO


class LogConnector:
    Properties = LogProperties

    async def run(self, properties: LogProperties, context: TaskContext) -> dict[str, Any]:
        raise NotImplementedError  # being written
