"""Runs one attempt of one task run and turns whatever happens into a `TaskResult`.

No Kafka here: log records go to the `publish_log` callable the service passes in. Every
outcome is data: an unknown type, a bad property, a timeout, `TaskFailed` or a connector
bug all end as a FAILED result (a bug also gets a traceback in the worker's own log).
Two things escape: cancellation (a cancelled attempt has no result, its request is
redelivered) and a failure of `publish_log` (Kafka's fault, not the task's: the worker
handles it; the attempt is not reported FAILED).

Secrets: only the request's own markers resolve, those holding its `secret_nonce` and
naming one of its `secret_names` (what the flow's `secret()` calls asked for when the
executor rendered the properties). Marker-like text from anywhere else (an input, a
webhook body, an upstream output) is data and reaches the task unchanged. `read()`
markers, which hold the same nonce, become the text of their storage files next
(`headrace.stored_reads`), read from the task's own namespace only.

Everything published is made safe first:
- the values of ALL the worker's secrets (not only those the task referenced) are masked
  in log lines, the error text and every string of the outputs, in their common
  encodings too (`masking.Masker`); values shorter than `MIN_MASKED_SECRET_CHARS` are
  not masked (masking "1" would garble every line and hide nothing worth hiding);
- NUL characters become U+FFFD: PostgreSQL refuses `\\x00` in text and `\\u0000` in jsonb;
- at most `MAX_LOG_LINES` lines per run of an attempt, each cut to `MAX_LOG_LINE_BYTES`;
- outputs over `MAX_OUTPUTS_BYTES` of JSON fail the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_hex
from typing import Any

import isodate
import orjson
from pydantic import ValidationError

from headrace.config import DEFAULT_TASK_TIMEOUT, TASK_TIMEOUT_ENV
from headrace.connectors.base import (
    MAX_OUTPUTS_BYTES,
    Connector,
    ProcessGuard,
    TaskContext,
    TaskFailed,
    describe_size,
    uses_workdir,
)
from headrace.connectors.registry import connector_classes
from headrace.errors import HeadraceError
from headrace.messages import LogLevel, LogRecord, TaskRequest, TaskResult
from headrace.secret_markers import resolve_secrets
from headrace.services.worker.masking import Masker
from headrace.services.worker.reaper import ATTEMPT_DIRECTORY_PREFIX
from headrace.states import State
from headrace.storage import Storage, TaskFiles
from headrace.stored_reads import has_reads, resolve_reads

log = logging.getLogger(__name__)

# Outputs travel in the result, in execution events and in the executor's state; Kafka's
# default max.message.bytes is 1 MB, so one attempt's outputs must stay well below it.
# Lines published per run of an attempt: a runaway loop must not flood `logs` and the
# database. Then one warning line, and the rest is dropped.
MAX_LOG_LINES = 10_000
# A longer line (UTF-8 bytes) is cut and marked: the log is for people, not for data.
MAX_LOG_LINE_BYTES = 16 * 1024

PublishLog = Callable[[LogRecord], Awaitable[None]]


def new_run_nonce() -> str:
    """Tells apart two runs of one attempt (a redelivery): their log ids differ, and the
    executor tells a lost run from its re-run (`TaskResult.run_id`)."""
    return token_hex(6)


@dataclass(frozen=True, slots=True)
class TimeLimit:
    seconds: float
    error: str  # the attempt's error when it runs out: where the limit came from, and how
    # to raise it


def attempt_time_limit(request: TaskRequest, default: timedelta) -> TimeLimit:
    """How long the attempt may run: its task's `timeout`, else the worker's default."""
    if request.timeout_ms is not None:
        limit = timedelta(milliseconds=request.timeout_ms)
        return TimeLimit(
            limit.total_seconds(),
            f"timed out after {isodate.duration_isoformat(limit)}, the task's `timeout`"
            " (set on the task or by the flow's pluginDefaults): raise it there",
        )
    text = isodate.duration_isoformat(default)
    return TimeLimit(
        default.total_seconds(),
        f"timed out after {text}, the workers' default for a task without `timeout`"
        f" ({TASK_TIMEOUT_ENV}={text}): set `timeout` on the task, or on every task of its"
        " type with the flow's pluginDefaults",
    )


def cut_line(message: str) -> str:
    """`message`, cut to `MAX_LOG_LINE_BYTES` of UTF-8 with a marker saying how long it was."""
    if len(message) * 4 <= MAX_LOG_LINE_BYTES:  # fast path: cannot be too long
        return message
    encoded = message.encode("utf-8", errors="replace")
    if len(encoded) <= MAX_LOG_LINE_BYTES:
        return message
    kept = encoded[:MAX_LOG_LINE_BYTES].decode("utf-8", errors="ignore")
    return f"{kept} [line truncated: {len(encoded)} bytes, at most {MAX_LOG_LINE_BYTES}]"


def oversized_outputs_error(size: int) -> str:
    return (
        f"outputs are {describe_size(size)}, over the {MAX_OUTPUTS_BYTES // 1024} KiB limit: "
        "write large data to a file or a table and pass its location"
    )


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
async def _attempt_directory(needed: bool, guard: ProcessGuard | None) -> AsyncIterator[Path]:
    """A fresh temporary directory for one attempt, removed after (off the event loop),
    or by the worker's reaper if the worker dies first."""
    if not needed:
        # The connector declared it never uses one: skip the mkdir/rmdir (most of a `log`
        # task's cost on overlay file systems).
        yield Path(tempfile.gettempdir())
        return
    path = Path(tempfile.mkdtemp(prefix=ATTEMPT_DIRECTORY_PREFIX))
    if guard is not None:
        guard.keep_directory(path)
    try:
        yield path
    finally:
        try:
            await asyncio.shield(asyncio.to_thread(_remove_directory, path))
        finally:  # even when cancelled meanwhile: the removal goes on in its thread
            if guard is not None:
                guard.forget_directory(path)


def task_files(storage: Storage, request: TaskRequest) -> TaskFiles:
    return TaskFiles(
        storage,
        namespace=request.namespace,
        flow_id=request.flow_id,
        execution_id=request.execution_id,
        task_id=request.task_id,
        task_run_id=request.task_run_id,
    )


def _now() -> datetime:
    return datetime.now(UTC)


async def run_attempt(
    request: TaskRequest,
    *,
    worker_id: str,
    publish_log: PublishLog,
    secrets: Mapping[str, str] | None = None,
    connectors: Mapping[str, type[Connector]] | None = None,
    run_nonce: str | None = None,
    process_guard: ProcessGuard | None = None,
    default_timeout: timedelta = DEFAULT_TASK_TIMEOUT,
    storage: Storage | None = None,
) -> TaskResult:
    """Run `request` to its end and describe the outcome.

    Raises only `CancelledError` and what `publish_log` raised (an infrastructure failure:
    the attempt then has no result). `secrets`: the worker's, by name; all are masked.
    `default_timeout` bounds an attempt whose request has no `timeout_ms`. `storage`: the
    shared file storage the attempt's `context.files` writes to and reads from.
    """
    started_at = _now()
    nonce = run_nonce or new_run_nonce()
    secrets = secrets or {}
    mask = Masker(secrets.values())
    line_number = 0
    publish_failure: BaseException | None = None

    async def publish(level: LogLevel, message: str) -> None:
        nonlocal line_number, publish_failure
        line_number += 1
        record = LogRecord(
            # Unique per run of the attempt: a redelivered run's lines are new lines (the
            # indexer ignores an id it has seen), and ids stay stable across log replays.
            id=f"{request.task_run_id}:{request.attempt}:{nonce}:{line_number}",
            execution_id=request.execution_id,
            namespace=request.namespace,
            flow_id=request.flow_id,
            time=_now(),
            level=level,
            message=message,
            task_run_id=request.task_run_id,
            task_id=request.task_id,
            attempt=request.attempt,
        )
        try:
            await publish_log(record)
        except Exception as exc:
            # Remembered: a connector that swallows it must not turn it into its own result.
            publish_failure = exc
            raise

    async def log_sink(level: LogLevel, message: str) -> None:
        if request.log_level is not None and not level.at_least(request.log_level):
            return  # the task's `logLevel` drops it (before the line limit counts it)
        if line_number < MAX_LOG_LINES:
            await publish(level, cut_line(mask(message)))
        elif line_number == MAX_LOG_LINES:
            await publish(LogLevel.WARN, f"log output truncated after {MAX_LOG_LINES} lines")
        # else: dropped

    def finish(
        state: State, outputs: dict[str, Any] | None = None, error: str | None = None
    ) -> TaskResult:
        if publish_failure is not None:
            raise publish_failure
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
            run_id=nonce,
        )

    registry = connector_classes() if connectors is None else connectors
    connector_class = registry.get(request.type)
    if connector_class is None:
        return finish(State.FAILED, error=f"unknown task type '{request.type}'")
    try:
        raw_properties, _ = resolve_secrets(
            request.properties,
            secrets.get,
            nonce=request.secret_nonce,
            names=request.secret_names,
        )
        # After the secrets: a file's text is never taken for a secret marker.
        if has_reads(raw_properties, request.secret_nonce):
            files = None if storage is None else task_files(storage, request)
            raw_properties = await asyncio.to_thread(
                resolve_reads,
                raw_properties,
                None if files is None else files.open,
                nonce=request.secret_nonce,
            )
    except HeadraceError as exc:
        return finish(State.FAILED, error=str(exc))
    try:
        properties = connector_class.Properties.model_validate(raw_properties)
    except ValidationError as exc:
        return finish(State.FAILED, error=describe_validation_error(exc))

    limit = attempt_time_limit(request, default_timeout)
    try:
        async with _attempt_directory(uses_workdir(connector_class), process_guard) as workdir:
            context = TaskContext(
                execution_id=request.execution_id,
                namespace=request.namespace,
                flow_id=request.flow_id,
                task_id=request.task_id,
                task_run_id=request.task_run_id,
                attempt=request.attempt,
                log_sink=log_sink,
                workdir=workdir,
                process_guard=process_guard,
                files=None if storage is None else task_files(storage, request),
                mask=mask,
            )
            deadline = asyncio.timeout(limit.seconds)
            try:
                async with deadline:
                    outputs = await connector_class().run(properties, context)
            except TimeoutError:
                if not deadline.expired():
                    raise  # the connector's own timeout: a failure like any other
                return finish(State.FAILED, error=limit.error)
    except TaskFailed as exc:
        return finish(State.FAILED, error=str(exc))
    except Exception as exc:
        if publish_failure is not None:
            raise publish_failure from None  # Kafka's failure, not the task's
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
    outputs = mask.value(outputs)
    try:
        size = len(orjson.dumps(outputs))
    except TypeError as exc:
        return finish(State.FAILED, error=f"outputs are not JSON-serialisable: {exc}")
    if size > MAX_OUTPUTS_BYTES:
        return finish(State.FAILED, error=oversized_outputs_error(size))
    return finish(State.SUCCESS, outputs)
