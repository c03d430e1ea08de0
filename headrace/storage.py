"""File storage: where tasks put files too big for outputs, and namespaces keep their files.

One directory that every worker and the gateway mount (a shared volume: `docker-compose.yml`
mounts one; `headrace server local` keeps it in its data folder). Files are named by URIs:

- `headrace:///{namespace}/{flow}/executions/{execution}/tasks/{task}/{task_run}/{name}`:
  a file a task run wrote (`fetchType: STORE`, `kafka.consume` with `store`); its outputs
  hold the URI, `headrace execution file` and `GET /api/v1/executions/{id}/file` download
  it, a later task's `inputFiles` take it. Kept as long as the execution
  (`HEADRACE_EXECUTION_RETENTION`), then swept.
- `headrace:///{namespace}/_files/{path}`: the namespace's own files (scripts, a dbt
  project), uploaded through the API or `headrace namespace files`, copied into a task's
  working directory when it asks (`namespaceFiles`). Kept until deleted. Listing,
  writing and deleting them is headrace/namespace_storage.py's job.

A URI maps to a path under the root segment by segment; `..`, `.`, empty segments and
NUL are refused, so no URI names a file outside the root. Writes go to a temporary file
renamed into place: a reader sees a whole file or none, and a retried attempt replaces
its earlier file whole.

The directory itself is the boundary: anything running as the worker's user can read it
(a `shell` task included), so files are not secret from other tasks on that worker. The
same tasks can write into it, so every read here (`Storage.open`, and the namespace
files' module) walks from the root one folder at a time without following a symbolic
link, and opens regular files only (`open_directory`, `open_file`): a link planted in
the storage must not make the gateway serve its own files (its credentials,
`/proc/self/environ`) nor a task read another namespace's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from headrace.errors import HeadraceError

if TYPE_CHECKING:
    from headrace.namespace_storage import NamespaceEntry

SCHEME = "headrace"
NAMESPACE_FILES = "_files"  # the namespace's own files, beside its flows' folders
EXECUTIONS = "executions"
# What writes name their temporary files: never a stored file (not listed, not copied,
# refused as a namespace file's name).
WRITING_PREFIX = ".writing-"

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_LINK_DIRECTORY = _DIRECTORY | os.O_NOFOLLOW
# O_NONBLOCK: opening a named pipe planted in the storage would otherwise wait forever.
_NO_LINK_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What `open_file` raises when there is no regular file to read at the end of a path:
# missing, a file where a folder is, a link, a folder, a pipe or device or socket, or a
# name too long for the file system (so never written).
_NO_FILE = (
    errno.ENOENT,
    errno.ENOTDIR,
    errno.ELOOP,
    errno.EISDIR,
    errno.ENXIO,
    errno.ENAMETOOLONG,
)


class StorageError(HeadraceError):
    """A URI that names no storage file, or one that cannot be read or written."""


def _check_segment(segment: str, uri: str) -> str:
    if segment in ("", ".", "..") or "\0" in segment or "/" in segment or not _utf8(segment):
        raise StorageError(f"{uri!r} is not a storage file: bad path segment {segment!r}")
    if segment.startswith(WRITING_PREFIX):  # a file being written: not one yet
        raise StorageError(f"{uri!r} is not a storage file: {segment!r} is being written")
    return segment


def parse_uri(uri: str) -> tuple[str, ...]:
    """The path segments of a `headrace:///...` URI; StorageError naming what is wrong."""
    if not isinstance(uri, str):
        raise StorageError(f"{uri!r} is not a storage URI (headrace:///...)")
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc or parts.query or parts.fragment:
        raise StorageError(f"{uri!r} is not a storage URI (headrace:///namespace/...)")
    raw = parts.path.split("/")
    if raw[0] != "" or len(raw) < 3:
        raise StorageError(f"{uri!r} is not a storage URI (headrace:///namespace/...)")
    return tuple(_check_segment(unquote(segment), uri) for segment in raw[1:])


def _utf8(text: str) -> bool:
    """Whether `text` has a UTF-8 form (a lone surrogate, which JSON can carry, has none:
    no file can be named by it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make_uri(*segments: str) -> str:
    for segment in segments:  # before quoting: a lone surrogate cannot be quoted
        _check_segment(segment, "/".join(segments))
    return SCHEME + "://" + "".join("/" + quote(segment, safe="") for segment in segments)


def is_uri(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME + ":///")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """Where a storage URI points: its namespace, and for a task's file, its execution."""

    uri: str
    segments: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return self.segments[0]

    @property
    def execution_id(self) -> str | None:
        segments = self.segments
        # No flow id starts with `_`: `{ns}/_files/executions/...` is a namespace file.
        if (
            len(segments) >= 7
            and segments[1] != NAMESPACE_FILES
            and segments[2] == EXECUTIONS
            and segments[4] == "tasks"
        ):
            return segments[3]
        return None

    @property
    def name(self) -> str:
        return self.segments[-1]


def stored_file(uri: str) -> StoredFile:
    return StoredFile(uri, parse_uri(uri))


class Storage:
    """The storage directory; every method is blocking (call it off the event loop)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, uri: str) -> Path:
        """Where `uri` is under the root (for writing: reads go through `open`)."""
        return self.root.joinpath(*parse_uri(uri))

    def task_file_uri(
        self,
        namespace: str,
        flow_id: str,
        execution_id: str,
        task_id: str,
        task_run_id: str,
        name: str,
    ) -> str:
        return make_uri(
            namespace, flow_id, EXECUTIONS, execution_id, "tasks", task_id, task_run_id, name
        )

    @contextlib.contextmanager
    def writer(self, uri: str) -> Iterator[IO[bytes]]:
        """A binary file to fill; it becomes `uri` when the block ends without error."""
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=WRITING_PREFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                yield file
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def open(self, uri: str) -> IO[bytes]:
        """`uri` opened for reading: a regular file reached from the root without
        following a symbolic link (`open_file`). StorageError when there is no such file,
        or a link, a folder or a pipe stands in its place or on its way."""
        segments = parse_uri(uri)
        try:
            return open_file(self.root, segments)
        except OSError as exc:
            if exc.errno in _NO_FILE:
                raise StorageError(f"{uri}: no such file in storage") from exc
            raise

    def size(self, uri: str) -> int:
        """The size of the file `uri` in bytes, found as `open` finds it."""
        with self.open(uri) as file:
            return os.fstat(file.fileno()).st_size

    def sweep_executions(self, older_than_s: float, now: float | None = None) -> int:
        """Remove the files of executions none of whose files changed in `older_than_s`
        seconds; how many executions' folders went.

        `{namespace}/{flow}/executions/{execution}` folders only, walked through folder
        descriptors without following a link (tasks may plant links here: one must not
        lead the sweep to a namespace's own files or out of the storage)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        try:
            root = os.open(self.root, _DIRECTORY)
        except FileNotFoundError:
            return 0  # nothing stored yet
        removed = 0
        try:
            for namespace in _folders(root):
                for flow in _folders(root, namespace):
                    if flow == NAMESPACE_FILES:
                        continue  # the namespace's own files: kept until deleted
                    removed += _sweep_flow(root, (namespace, flow, EXECUTIONS), cutoff)
        finally:
            os.close(root)
        return removed


def _folders(base: int, *parts: str) -> list[str]:
    """The names of the real folders (not links) in `base/parts`; none when it is gone
    or not a folder (another worker's sweep may remove it under our feet)."""
    try:
        fd = open_directory(base, parts)
    except OSError:
        return []
    try:
        with os.scandir(fd) as entries:
            return [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
    finally:
        os.close(fd)


def _sweep_flow(root: int, executions: tuple[str, ...], cutoff: float) -> int:
    """Remove the execution folders under `executions` whose newest change is older than
    `cutoff`; how many went."""
    try:
        fd = open_directory(root, executions)
    except OSError:
        return 0
    removed = 0
    try:
        for execution in _folders(fd):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if _newest_change(fd, execution) < cutoff:
                    # With a descriptor, rmtree removes what is below without following links.
                    shutil.rmtree(execution, dir_fd=fd)
                    removed += 1
    finally:
        os.close(fd)
    return removed


def _newest_change(base: int, name: str) -> float:
    """The latest modification time of the folder `name` in `base` and of all it holds,
    links not followed."""
    newest = os.stat(name, dir_fd=base, follow_symlinks=False).st_mtime
    for _, _, files, folder in os.fwalk(name, dir_fd=base, follow_symlinks=False):
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(file, dir_fd=folder, follow_symlinks=False)
                newest = max(newest, info.st_mtime)
    return newest


@dataclass(frozen=True, slots=True)
class TaskFiles:
    """One task run's view of the storage (`TaskContext.files`): it writes under its own
    task run's folder and reads files of its own namespace only."""

    storage: Storage
    namespace: str
    flow_id: str
    execution_id: str
    task_id: str
    task_run_id: str

    def uri(self, name: str) -> str:
        """The URI the file `name` of this task run gets."""
        return self.storage.task_file_uri(
            self.namespace, self.flow_id, self.execution_id, self.task_id, self.task_run_id, name
        )

    def writer(self, name: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """Blocking: a file to fill that becomes `self.uri(name)` (see `Storage.writer`)."""
        return self.storage.writer(self.uri(name))

    def open(self, uri: str) -> IO[bytes]:
        """Blocking: `uri` opened for reading if this task may read it (a file of its own
        namespace, opened as `Storage.open` does), else StorageError saying why."""
        file = stored_file(uri)
        if file.namespace != self.namespace:
            raise StorageError(
                f"{uri}: a file of namespace {file.namespace!r}; a task of {self.namespace!r}"
                " reads only its own namespace's files"
            )
        return self.storage.open(uri)

    def namespace_files(self) -> list[NamespaceEntry]:
        """Blocking: every file and folder of this task's namespace (links and other
        non-files as kind "other", for the caller to refuse)."""
        # Imported here: headrace.namespace_storage builds on this module.
        from headrace.namespace_storage import namespace_files

        return namespace_files(self.storage, self.namespace)

    def open_namespace_file(self, path: str) -> IO[bytes]:
        """Blocking: the file `path` of this task's namespace, opened for reading."""
        from headrace.namespace_storage import open_namespace_file

        return open_namespace_file(self.storage, self.namespace, path)


# ------------------------------------------------------------------ opening without links
#
# Tasks run as the workers' user and can write into the storage folder: every walk below
# the root goes one folder at a time through descriptors opened with O_NOFOLLOW, so a
# link planted there is refused rather than followed.


def open_directory(base: Path | int, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of the folder `base/parts[0]/parts[1]/…`, opened one step at a time
    without following a symbolic link; `base` is a path or a folder's descriptor (not
    consumed). `create`: missing folders are made. Close it with `os.close`.

    Raises OSError as the failing step did, its `filename` the path up to that step:
    ENOENT (missing), ENOTDIR (a file there), ELOOP (a symbolic link there)."""
    fd = os.dup(base) if isinstance(base, int) else os.open(base, _DIRECTORY)
    try:
        for depth, part in enumerate(parts, 1):
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                inner = os.open(part, _NO_LINK_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                code = exc.errno
                # Linux says ENOTDIR for a link here: tell a link from a plain file.
                with contextlib.suppress(OSError):
                    if code == errno.ENOTDIR and stat.S_ISLNK(
                        os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                    ):
                        code = errno.ELOOP
                where = "/".join(parts[:depth])
                raise OSError(code, os.strerror(code or 0), where) from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(base: Path | int, parts: Sequence[str]) -> IO[bytes]:
    """The regular file `base/parts[0]/…/parts[-1]` opened for reading, reached as
    `open_directory` reaches folders, and itself no symbolic link either.

    Raises OSError as `open_directory` does for the folders on the way, and for the file
    (its `filename` all of `parts`): ENOENT, ELOOP (a link), EISDIR (a folder), ENXIO (a
    named pipe, a device or a socket: what opening a socket says), ENAMETOOLONG."""
    *folders, name = parts
    where = "/".join(parts)
    folder = open_directory(base, folders)
    try:
        fd = os.open(name, _NO_LINK_FILE, dir_fd=folder)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, where) from None
    finally:
        os.close(folder)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.ENXIO
            raise OSError(code, os.strerror(code), where)
        os.set_blocking(fd, True)  # O_NONBLOCK was for the open only
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
