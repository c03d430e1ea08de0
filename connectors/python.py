"""`python`: run an inline Python script in a subprocess."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from headrace.connectors.base import ConnectorProperties, TaskContext


class PythonProperties(ConnectorProperties):
    script: str
    env: dict[str, str] = Field(default_factory=dict)


class PythonConnector:
    Properties = PythonProperties

    async def run(self, properties: PythonProperties, context: TaskContext) -> dict[str, Any]:
        raise NotImplementedError  # being written
