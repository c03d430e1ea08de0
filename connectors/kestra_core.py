"""Kestra's small core tasks that need no engine support: `return`
(`io.kestra.plugin.core.debug.Return`), `output.values`
(`io.kestra.plugin.core.output.OutputValues`) and `sleep`
(`io.kestra.plugin.core.flow.Sleep`), with Kestra's property and output names.

Each runs on a worker like any task: its properties are rendered before it starts, so
`format` and `values` hold the expressions' results, as in Kestra.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field

from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.flow.durations import Duration
from headrace.messages import LogLevel


class ReturnProperties(ConnectorProperties):
    format: str | None = Field(default=None, description="The text to render and return.")


class ReturnOutputs(BaseModel):
    value: str | None = Field(description="The rendered `format`.")


class ReturnTask:
    """Returns `format`, rendered, as the output `value` (and logs it at DEBUG)."""

    Properties = ReturnProperties
    Outputs = ReturnOutputs
    aliases = ("io.kestra.plugin.core.debug.Return", "io.kestra.core.tasks.debugs.Return")
    uses_workdir = False

    async def run(self, properties: ReturnProperties, context: TaskContext) -> dict[str, Any]:
        if properties.format is not None:
            await context.log(LogLevel.DEBUG, properties.format)
        return {"value": properties.format}


class OutputValuesProperties(ConnectorProperties):
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Values to output, any JSON (text, numbers, lists, objects); text with"
        " expressions is rendered. Read as `outputs.<task>.values.<name>`.",
    )


class OutputValuesOutputs(BaseModel):
    values: dict[str, Any] = Field(description="The rendered `values`.")


class OutputValues:
    """Outputs `values`, rendered, for the tasks after it."""

    Properties = OutputValuesProperties
    Outputs = OutputValuesOutputs
    aliases = ("io.kestra.plugin.core.output.OutputValues",)
    uses_workdir = False

    async def run(self, properties: OutputValuesProperties, context: TaskContext) -> dict[str, Any]:
        return {"values": properties.values}


class SleepProperties(ConnectorProperties):
    duration: Duration = Field(
        ge=timedelta(0), description="How long to wait: an ISO-8601 duration, e.g. PT30S."
    )


class SleepTask:
    """Waits `duration`, then succeeds. A kill or the task's `timeout` ends the wait."""

    Properties = SleepProperties
    aliases = ("io.kestra.plugin.core.flow.Sleep",)
    uses_workdir = False

    async def run(self, properties: SleepProperties, context: TaskContext) -> dict[str, Any]:
        await asyncio.sleep(properties.duration.total_seconds())
        return {}
