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

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
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


class EchoProperties(ConnectorProperties):
    format: str = Field(description="The text to log.")
    level: LogLevel = Field(default=LogLevel.INFO, description="The line's level.")


class EchoTask:
    """Kestra's deprecated `Echo`: logs `format` at `level` (as `log` does)."""

    Properties = EchoProperties
    aliases = ("io.kestra.plugin.core.debug.Echo", "io.kestra.core.tasks.debugs.Echo")
    uses_workdir = False

    async def run(self, properties: EchoProperties, context: TaskContext) -> dict[str, Any]:
        await context.log(properties.level, properties.format)
        return {}


# Kestra's TruthUtils: these texts are false, every other rendered text is true.
_FALSY = frozenset({"", "0", "-0", "false"})


class AssertProperties(ConnectorProperties):
    conditions: list[Any] = Field(
        min_length=1,
        description="Expressions; each must render true (empty text, 0 and false are false).",
    )
    error_message: str | None = Field(
        default=None,
        alias="errorMessage",
        description="Added to the failure's message when an assertion fails.",
    )


class AssertTask:
    """Kestra's `Assert`: fails, logging each false condition, unless all are true."""

    Properties = AssertProperties
    aliases = ("io.kestra.plugin.core.execution.Assert",)
    uses_workdir = False

    async def run(self, properties: AssertProperties, context: TaskContext) -> dict[str, Any]:
        failed = 0
        for i, value in enumerate(properties.conditions):
            if str(value).strip().lower() in _FALSY or value is None:
                failed += 1
                await context.log(LogLevel.ERROR, f"assertion {i + 1} failed: rendered {value!r}")
        if failed:
            plural = "s" if failed > 1 else ""
            extra = f"\n{properties.error_message}" if properties.error_message else ""
            raise TaskFailed(f"{failed} assertion{plural} failed!{extra}")
        return {}
