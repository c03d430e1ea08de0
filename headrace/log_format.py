"""How the services' own logs look: plain text (the default) or one JSON object a line.

`HEADRACE_LOG_FORMAT=json` (or `--log-format json` of `headrace server <service>`) makes
every line a JSON object with `time` (UTC, ISO 8601), `level`, `service`, `logger`,
`message`, the traceback as `exception` when there is one, and the ids of what the
service was handling when it logged: `execution_id`, `task_run_id`, `task_id`,
`attempt`. Those come from the log call (`log.info(..., extra={"execution_id": id})`)
or, without it, from the context the service set where it took up an execution or an
attempt (`handling`): every line the worker logs while it runs an attempt carries its
ids, and so does every line of the executor while it applies an execution's events.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("text", "json")
LOG_FORMAT_ENV = "HEADRACE_LOG_FORMAT"
ID_FIELDS = ("execution_id", "task_run_id", "task_id", "attempt")

# What this task (asyncio's: a worker attempt, an executor batch) is handling now.
_HANDLING: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "headrace_handling", default=None
)


@contextlib.contextmanager
def handling(**ids: Any) -> Iterator[None]:
    """Within the block, this task's log lines carry `ids` (see the module's doc)."""
    token = _HANDLING.set(ids)
    try:
        yield
    finally:
        _HANDLING.reset(token)


def set_handling(**ids: Any) -> contextvars.Token[dict[str, Any] | None]:
    """`handling` for a loop that takes up one execution after another: reset with
    `reset_handling(token)` after the last."""
    return _HANDLING.set(ids)


def reset_handling(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _HANDLING.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a string inside it)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _HANDLING.get()
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if value is None and context is not None:
                value = context.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def text_formatter(service: str) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")


def formatter(service: str, log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(service)
    if log_format == "text":
        return text_formatter(service)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")


def configure(service: str, level: str | int, log_format: str = "text") -> None:
    """The root logger of a service process: one handler on stderr, in `log_format`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(service, log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Python's warnings as log records too: in JSON, every line of the service is one.
    logging.captureWarnings(True)


def reformat(service: str, log_format: str) -> None:
    """Give every handler of the root logger our format (after a framework, Faust's
    worker, installed its own)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(service, log_format))
