"""Namespace files in a task's working directory (Kestra's `namespaceFiles`).

A namespace keeps files beside its flows (SQL, Python modules, a dbt project: uploaded
with `headrace namespace files` or the API, kept in the file storage by
headrace/namespace_storage.py). A task that says `namespaceFiles: {enabled: true}` gets a
copy of them in its working directory before it runs, at the same relative paths;
`include` and `exclude` narrow the copy down with glob patterns. Only the task's own
namespace's files are read: `company` does not see `company.team`'s.

The copy follows the rules of `inputFiles` (connectors/script_files.py): files are
written through directory descriptors opened without following links, and only regular
files are read or written; a symbolic link among the namespace's files (a task can plant
one in the storage) fails the task naming it. Files are copied a chunk at a time, never
read whole into memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

from headrace.connectors.base import TaskContext, TaskFailed, no_storage
from headrace.connectors.script_files import (
    COPY_CHUNK_BYTES,
    RESERVED_PREFIX,
    _match_parts,
    _open_target,
    _write_error,
    check_relative_path,
)
from headrace.namespace_storage import NamespaceEntry
from headrace.storage import StorageError, TaskFiles

PATTERNS_DESCRIPTION = (
    " Glob patterns on paths relative to the namespace's root: `*` and `?` within a name,"
    " `**` for any number of folders (`sql/**/*.sql`); a pattern naming a folder (`dbt`)"
    " takes everything below it. Wildcards do not match names starting with a dot unless"
    " the pattern's part does, as in a shell."
)


class NamespaceFiles(BaseModel):
    """Which of the namespace's files are copied into the task's working directory."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    enabled: bool = Field(
        default=False,
        description="Copy the namespace's files into the working directory before the task"
        " runs, at their paths relative to the namespace's root.",
    )
    include: list[str] = Field(
        default_factory=list,
        description="Only the files these patterns match (default: every file). A pattern"
        " that matches no file fails the task." + PATTERNS_DESCRIPTION,
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="None of the files these patterns match." + PATTERNS_DESCRIPTION,
    )

    @field_validator("include", "exclude")
    @classmethod
    def _relative_patterns(cls, patterns: list[str]) -> list[str]:
        # A leading `/` is the namespace's root, as Kestra writes namespace paths.
        return [check_relative_path(pattern.lstrip("/"), "namespaceFiles") for pattern in patterns]


def _pattern_parts(pattern: str) -> tuple[str, ...]:
    return PurePosixPath(pattern.lstrip("/")).parts


def _matches(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    """Whether `pattern` names the file `path` or one of the folders it is in."""
    return any(_match_parts(pattern, path[:depth]) for depth in range(1, len(path) + 1))


def select(entries: Iterable[NamespaceEntry], selection: NamespaceFiles) -> list[NamespaceEntry]:
    """The entries (files and links, not folders) `selection` takes, by path. TaskFailed
    naming the pattern when an `include` pattern matches nothing."""
    candidates = [entry for entry in entries if entry.kind != "directory"]
    includes = [_pattern_parts(pattern) for pattern in selection.include]
    excludes = [_pattern_parts(pattern) for pattern in selection.exclude]
    chosen: list[NamespaceEntry] = []
    matched = [False] * len(includes)
    for entry in candidates:
        parts = tuple(entry.path.split("/"))
        if includes:
            hits = [_matches(pattern, parts) for pattern in includes]
            if not any(hits):
                continue
            matched = [seen or hit for seen, hit in zip(matched, hits, strict=True)]
        if any(_matches(pattern, parts) for pattern in excludes):
            continue
        chosen.append(entry)
    for pattern, seen in zip(selection.include, matched, strict=True):
        if not seen:
            raise TaskFailed(f"namespaceFiles include {pattern!r} matches no file of the namespace")
    return chosen


def copy_namespace_files(
    files: TaskFiles | None,
    selection: NamespaceFiles,
    root: Path,
    reserved: Iterable[str] = (),
) -> list[str]:
    """Blocking: copy the files of the task's namespace that `selection` takes into
    `root`, at their paths; the paths copied. Nothing when `selection` is not enabled.

    `files`: the task's view of the storage (`TaskContext.files`); `reserved`: names in
    `root` that are the task's own (its script). Raises `TaskFailed` naming the file when
    one cannot be copied: no storage where the task runs, a link or a non-regular file
    among the namespace's files, a link on its way in `root`, a reserved name."""
    if not selection.enabled:
        return []
    if files is None:
        raise no_storage("namespaceFiles is enabled")
    try:
        entries = files.namespace_files()
    except (StorageError, OSError) as exc:
        raise TaskFailed(f"namespaceFiles: cannot list the namespace's files: {exc}") from None
    chosen = select(entries, selection)
    taken = set(reserved)
    for entry in chosen:
        top = entry.path.split("/", 1)[0]
        if top in taken or top.startswith(RESERVED_PREFIX):
            raise TaskFailed(
                f"namespace file {entry.path!r}: its name is taken by the task's own files"
            )
        if entry.kind != "file":
            raise TaskFailed(
                f"namespace file {entry.path!r} is a symbolic link or not a regular file in"
                " the storage: refused"
            )
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TaskFailed(
            f"namespaceFiles: cannot open the working directory {root}: {exc}"
        ) from exc
    try:
        for entry in chosen:
            _copy(files, entry.path, root_fd)
    finally:
        os.close(root_fd)
    return [entry.path for entry in chosen]


def _copy(files: TaskFiles, path: str, root_fd: int) -> None:
    try:
        source = files.open_namespace_file(path)  # no link followed, a regular file only
    except StorageError as exc:
        raise TaskFailed(f"namespace file {path!r}: {exc}") from None
    with contextlib.closing(source):
        try:
            with _open_target(root_fd, tuple(path.split("/"))) as target:
                shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)
        except OSError as exc:
            raise TaskFailed(f"namespace file {path!r}: {_write_error(exc)}") from exc


async def add_namespace_files(
    selection: NamespaceFiles, context: TaskContext, root: Path, reserved: Iterable[str] = ()
) -> None:
    """Copy the namespace files `selection` takes into `root` (off the event loop) and
    say how many in the task's log; nothing when it is not enabled."""
    if not selection.enabled:
        return
    copied = await asyncio.to_thread(
        copy_namespace_files, context.files, selection, root, tuple(reserved)
    )
    await context.info(copied_line(copied, context.namespace))


def copied_line(copied: list[str], namespace: str) -> str:
    """The log line saying what namespaceFiles brought in."""
    return f"namespaceFiles: copied {len(copied)} file(s) of namespace {namespace}"
