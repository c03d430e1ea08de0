"""Run one task as a worker runs it (`services.worker.runner.run_attempt`, no Kafka, as
`headrace.testing.run_task` does) with a file storage the test chooses, or none, and
the task id the test chooses: the stored files' URIs are then known in advance."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from headrace.connectors.registry import connector_classes
from headrace.flow.model import canonical_task_type
from headrace.messages import LogLevel, LogRecord, TaskRequest
from headrace.services.worker.runner import run_attempt
from headrace.storage import Storage
from headrace.testing import TaskRun


async def run_stored(
    task_type: str,
    properties: Mapping[str, Any],
    storage: Storage | None,
    *,
    namespace: str = "test",
    task_id: str = "test-task",
    task_run_id: str = "test-task-run",
    timeout: timedelta | None = None,
    secrets: Mapping[str, str] | None = None,
) -> TaskRun:
    """One attempt of the installed `task_type` with `properties`, its files in `storage`
    (flow `test-flow`, execution `test-execution`); None: no storage, as outside a
    worker. `secrets`: the worker's, by name (masked in everything the run reports)."""
    request = TaskRequest(
        execution_id="test-execution",
        namespace=namespace,
        flow_id="test-flow",
        flow_revision=1,
        task_run_id=task_run_id,
        task_id=task_id,
        attempt=1,
        type=canonical_task_type(task_type),
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
        connectors=connector_classes(),
        storage=storage,
        secrets=secrets,
    )
    return TaskRun(state=result.state, outputs=result.outputs, error=result.error, logs=logs)


def stored_lines(storage: Storage, uri: str) -> list[Any]:
    """The JSON values of a stored JSON Lines file, one per line."""
    with storage.open(uri) as file:
        return [json.loads(line) for line in file]


def files_under(root: Path) -> list[Path]:
    """Every file under `root` (temporary ones included), relative to it."""
    return sorted(path.relative_to(root) for path in root.rglob("*") if not path.is_dir())
