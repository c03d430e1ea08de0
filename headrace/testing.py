"""A test kit for connector authors: run one task the way a worker runs it.

    from headrace.testing import run_task

    async def test_my_connector():
        run = await run_task(MyConnector, {"url": "http://127.0.0.1:8080"})
        assert run.state is State.SUCCESS, run.error
        assert run.outputs["rows"] == 3
        assert "synced 3 rows" in run.messages

`run_task` goes through the worker's own attempt runner (`services.worker.runner`), not
a shortcut: properties validated by the connector's model (a bad one is a FAILED run
saying which property), the time limit, secrets masked in logs, outputs and the error,
log lines cut and counted, outputs checked for size. Only Kafka is left out: log lines
are collected, and the result is returned instead of published. A kill is a
cancellation: cancel the `asyncio` task running `run_task` and the connector sees what a
worker's kill does to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from headrace.connectors.base import Connector
from headrace.connectors.registry import connector_classes
from headrace.flow.model import canonical_task_type
from headrace.messages import LogLevel, LogRecord, TaskRequest
from headrace.services.worker.runner import run_attempt
from headrace.states import State

TEST_TYPE = "test.connector"  # the type a connector class passed in runs under


@dataclass(slots=True)
class TaskRun:
    """How one attempt ended, and what it logged."""

    state: State
    outputs: dict[str, Any]
    error: str | None
    logs: list[tuple[LogLevel, str]] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.logs]


async def run_task(
    connector: str | type[Connector],
    properties: Mapping[str, Any],
    *,
    secrets: Mapping[str, str] | None = None,
    timeout: timedelta | None = None,
    attempt: int = 1,
) -> TaskRun:
    """Run one attempt of `connector` (an installed task type's name or alias, or a class) with
    `properties` (values as a flow's expressions would have rendered them).

    `secrets`: the worker's secrets by name; their values are masked in everything the
    run reports. `timeout`: the task's `timeout` (default: the workers' default).
    """
    if isinstance(connector, str):
        task_type, connectors = canonical_task_type(connector), connector_classes()
    else:
        task_type, connectors = TEST_TYPE, {TEST_TYPE: connector}
    request = TaskRequest(
        execution_id="test-execution",
        namespace="test",
        flow_id="test-flow",
        flow_revision=1,
        task_run_id="test-task-run",
        task_id="test-task",
        attempt=attempt,
        type=task_type,
        properties=dict(properties),
        time=datetime.now(UTC),
        timeout_ms=None if timeout is None else int(timeout.total_seconds() * 1000),
    )
    logs: list[tuple[LogLevel, str]] = []

    async def collect(record: LogRecord) -> None:
        logs.append((record.level, record.message))

    result = await run_attempt(
        request,
        worker_id="test-worker",
        publish_log=collect,
        secrets=secrets,
        connectors=connectors,
    )
    return TaskRun(state=result.state, outputs=result.outputs, error=result.error, logs=logs)
