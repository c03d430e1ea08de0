"""Runs one attempt of one task run and turns whatever happens into a `TaskResult`.

No Kafka here: log records go to the `publish_log` callable the service passes in. Every
outcome is data: an unknown type, a bad property, a timeout, `TaskFailed` or a connector
bug all end as a FAILED result (a bug also gets a traceback in the worker's own log).
Only cancellation escapes: a cancelled attempt has no result, its request is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from headrace.connectors.base import Connector, TaskContext, TaskFailed, uses_workdir
from headrace.connectors.registry import connector_classes
from headrace.errors import HeadraceError
from headrace.expressions import resolve_secrets
from headrace.messages import LogLevel, LogRecord, TaskRequest, TaskResult
from headrace.states import State

log = logging.getLogger(__name__)

MASK = "******"
SECRET_ENV_PREFIX = "HEADRACE_SECRET_"

PublishLog = Callable[[LogRecord], Awaitable[None]]
SecretLookup = Callable[[str], str | None]


def env_secret_lookup(name: str) -> str | None:
    """A secret's value from the worker's environment (`HEADRACE_SECRET_<NAME>`)."""
    return os.environ.get(SECRET_ENV_PREFIX + name)


class Masker:
    """Replaces secret values in text; longest first, so a secret containing another hides whole."""

    def __init__(self, values: Iterable[str]) -> None:
        self._values = sorted({v for v in values if v}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, MASK)
        return text


def describe_validation_error(error: ValidationError) -> str:
    """`invalid property 'commands': Field required; …`: names each faulty property."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(properties)"
        parts.append(f"invalid property '{where}': {item['msg']}")
    return "; ".join(parts)


def _remove_directory(path: Path) -> None:
    def report(function: Any, failed_path: str, exc_info: Any) -> None:
        log.warning("could not remove %s: %s", failed_path, exc_info[1])

    shutil.rmtree(path, onerror=report)


@contextlib.asynccontextmanager
async def _attempt_directory(needed: bool) -> AsyncIterator[Path]:
    """A fresh temporary directory for one attempt, removed after (off the event loop)."""
    if not needed:
        # The connector declared it never uses one: skip the mkdir/rmdir (most of a `log`
        # task's cost on overlay file systems).
        yield Path(tempfile.gettempdir())
        return
    path = Path(tempfile.mkdtemp(prefix="headrace-attempt-"))
    try:
        yield path
    finally:
        await asyncio.shield(asyncio.to_thread(_remove_directory, path))


def _now() -> datetime:
    return datetime.now(UTC)


async def run_attempt(
    request: TaskRequest,
    *,
    worker_id: str,
    publish_log: PublishLog,
    secret_lookup: SecretLookup = env_secret_lookup,
    connectors: Mapping[str, type[Connector]] | None = None,
) -> TaskResult:
    """Run `request` to its end and describe the outcome; raises only `CancelledError`."""
    started_at = _now()
    mask = Masker(())
    line_number = 0

    async def log_sink(level: LogLevel, message: str) -> None:
        nonlocal line_number
        line_number += 1
        await publish_log(
            LogRecord(
                # Stable across redeliveries of the same attempt: the indexer upserts on it.
                id=f"{request.task_run_id}:{request.attempt}:{line_number}",
                execution_id=request.execution_id,
                namespace=request.namespace,
                flow_id=request.flow_id,
                time=_now(),
                level=level,
                message=mask(message),
                task_run_id=request.task_run_id,
                task_id=request.task_id,
                attempt=request.attempt,
            )
        )

    def finish(
        state: State, outputs: dict[str, Any] | None = None, error: str | None = None
    ) -> TaskResult:
        return TaskResult(
            execution_id=request.execution_id,
            task_run_id=request.task_run_id,
            attempt=request.attempt,
            state=state,
            started_at=started_at,
            ended_at=_now(),
            outputs=outputs or {},
            error=None if error is None else mask(error),
            worker_id=worker_id,
        )

    registry = connector_classes() if connectors is None else connectors
    connector_class = registry.get(request.type)
    if connector_class is None:
        return finish(State.FAILED, error=f"unknown task type '{request.type}'")
    try:
        raw_properties, used = resolve_secrets(request.properties, secret_lookup)
    except HeadraceError as exc:
        return finish(State.FAILED, error=str(exc))
    mask = Masker(used)
    try:
        properties = connector_class.Properties.model_validate(raw_properties)
    except ValidationError as exc:
        return finish(State.FAILED, error=describe_validation_error(exc))

    timeout_s = None if request.timeout_ms is None else request.timeout_ms / 1000
    try:
        async with _attempt_directory(uses_workdir(connector_class)) as workdir:
            context = TaskContext(
                execution_id=request.execution_id,
                namespace=request.namespace,
                flow_id=request.flow_id,
                task_id=request.task_id,
                task_run_id=request.task_run_id,
                attempt=request.attempt,
                log_sink=log_sink,
                workdir=workdir,
            )
            deadline = asyncio.timeout(timeout_s)
            try:
                async with deadline:
                    outputs = await connector_class().run(properties, context)
            except TimeoutError:
                if not deadline.expired():
                    raise  # the connector's own timeout: a failure like any other
                return finish(State.FAILED, error=f"timed out after {request.timeout_ms} ms")
    except TaskFailed as exc:
        return finish(State.FAILED, error=str(exc))
    except Exception as exc:
        # A connector bug or an unexpected condition: the attempt fails, the worker lives on.
        log.exception(
            "task %s attempt %d (%s, execution %s) raised",
            request.task_run_id,
            request.attempt,
            request.type,
            request.execution_id,
        )
        return finish(State.FAILED, error=f"{type(exc).__name__}: {exc}")
    if not isinstance(outputs, dict):
        return finish(State.FAILED, error=f"connector '{request.type}' returned no outputs dict")
    try:
        orjson.dumps(outputs)
    except TypeError as exc:
        return finish(State.FAILED, error=f"outputs are not JSON-serialisable: {exc}")
    return finish(State.SUCCESS, outputs)
