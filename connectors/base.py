"""The seam between workers and task types: one small protocol per connector.

A connector is a class registered under the entry-point group `headrace.connectors`
(the entry-point name is the task `type` in flows). It declares a pydantic model of its
properties and one coroutine that runs an attempt. It never talks to Kafka: the worker
hands it a `TaskContext` for logs and turns its return value or exception into a result.
docs/connectors.md is the guide for writing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from headrace.errors import HeadraceError
from headrace.messages import LogLevel
from headrace.storage import TaskFiles

# An attempt's outputs, as JSON, are at most this (the worker fails larger ones): a
# connector that collects data (rows, messages, files) checks it as it goes.
MAX_OUTPUTS_BYTES = 256 * 1024


def describe_size(size: int) -> str:
    """`3.2 MB`, `300.5 KiB`: a size as people read it in an error message."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    return f"{size / 1024:.1f} KiB"


class TaskFailed(HeadraceError):
    """The task ran and failed (non-zero exit, bad response): the attempt ends FAILED."""


def no_storage(needs: str) -> TaskFailed:
    """The failure of a task that needs the file storage where there is none (a
    connector's in-process tests, a tool): `needs` says what needed it."""
    return TaskFailed(
        f"{needs}, and no file storage is set up where this task runs (workers have one:"
        " HEADRACE_STORAGE_DIR)"
    )


class ConnectorProperties(BaseModel):
    """Base of every connector's properties model: unknown keys are errors."""

    # Kestra renders every property to text: `format: "{{ outputs.x.count }}"` gives "160"
    # there, so a number where text is due is taken as its text.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, coerce_numbers_to_str=True)


LogSink = Callable[[LogLevel, str], Awaitable[None]]


class ProcessGuard(Protocol):
    """Keeps a worker's task processes from outliving it (the worker's reaper)."""

    def wrap(self, argv: list[str]) -> tuple[list[str], int]:
        """`argv` made to register its process group before it runs, and the file
        descriptor to start it with as standard input (for that registration)."""
        ...

    def release(self, pgid: int) -> None:
        """The process group ended: forget it."""
        ...

    def keep_directory(self, path: Path) -> None:
        """Remove the attempt directory `path` should the worker die before it does."""
        ...

    def forget_directory(self, path: Path) -> None:
        """`path` was removed: forget it."""
        ...


@dataclass(slots=True)
class TaskContext:
    """What a running attempt may know and do besides computing its outputs."""

    execution_id: str
    namespace: str
    flow_id: str
    task_id: str
    task_run_id: str
    attempt: int
    log_sink: LogSink
    workdir: Path
    secrets: dict[str, str] = field(default_factory=dict)
    # Subprocesses started through `connectors._process.run_process` register with it,
    # so they die with the worker. None outside a worker (tests, tools).
    process_guard: ProcessGuard | None = None
    # The file storage as this task run sees it (headrace/storage.py): files too big for
    # outputs, and the namespace's files. None where no storage is set up.
    files: TaskFiles | None = None
    # Masks the worker's secrets in a text (the worker applies it to logs, outputs and
    # errors itself): for what a connector publishes some other way, such as a file.
    mask: Callable[[str], str] = str

    async def log(self, level: LogLevel, message: str) -> None:
        await self.log_sink(level, message)

    async def info(self, message: str) -> None:
        await self.log_sink(LogLevel.INFO, message)

    async def error(self, message: str) -> None:
        await self.log_sink(LogLevel.ERROR, message)


class Connector(Protocol):
    """A task type. `run` returns the attempt's outputs or raises `TaskFailed`.

    The class docstring is the type's description (`headrace plugins describe`): its
    first line a summary. Optional class attributes:
    - `aliases`: other names flows may use for the type (Kestra's, e.g.
      `("io.kestra.plugin.core.log.Log",)`);
    - `Outputs`: a pydantic model of the outputs, for the type's description only;
    - `uses_workdir = False`: the connector never touches `context.workdir`, so the
      worker skips creating (and removing) a temporary directory per attempt, which costs
      more than a whole `log` task.
    """

    Properties: ClassVar[type[ConnectorProperties]]

    async def run(self, properties: Any, context: TaskContext) -> dict[str, Any]: ...


def uses_workdir(connector_class: type) -> bool:
    """Whether attempts of this connector get a fresh temporary directory (default: yes)."""
    return bool(getattr(connector_class, "uses_workdir", True))


def aliases_of(connector_class: type) -> tuple[str, ...]:
    """The other names a connector answers to (its `aliases`; none by default)."""
    return tuple(getattr(connector_class, "aliases", ()))


def outputs_model_of(connector_class: type) -> type[BaseModel] | None:
    """The model describing a connector's outputs, if it declares one (`Outputs`)."""
    return getattr(connector_class, "Outputs", None)
