"""`shell`: run commands in a shell; output lines become log lines."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from headrace.connectors.base import ConnectorProperties, TaskContext


class ShellProperties(ConnectorProperties):
    commands: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = Field(default=None, alias="workingDirectory")


class ShellConnector:
    Properties = ShellProperties

    async def run(self, properties: ShellProperties, context: TaskContext) -> dict[str, Any]:
        raise NotImplementedError  # being written
