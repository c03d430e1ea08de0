"""A namespace's own files in the file storage: `{root}/{namespace}/_files/{path}`.

Their URI is `headrace:///{namespace}/_files/{path}` (headrace/storage.py). They are
uploaded, listed and deleted through the API (services/gateway/namespace_files_api.py)
or `headrace namespace files`, and copied into a task's working directory when it asks
(connectors/namespace_files.py, through `TaskFiles`). Kept until deleted: the sweep of
executions' files leaves them alone.

Every function below walks there one folder at a time through directory descriptors
opened without following links (`open_directory`), and opens files the same way
(`open_file`): tasks run as the workers' user and can write into the storage folder, and
a link planted among a namespace's files must not make the gateway serve, write or delete
anything outside them, nor a task read it. Each takes the `Storage` and is blocking: call
it off the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from headrace.storage import (
    NAMESPACE_FILES,
    WRITING_PREFIX,
    Storage,
    StorageError,
    make_uri,
    open_directory,
    open_file,
)

# What file systems take as one name (Linux's NAME_MAX, in bytes).
MAX_NAME_BYTES = 255
_CHUNK_BYTES = 1024 * 1024


class NotInStorage(StorageError):
    """No such file or folder."""


class StorageConflict(StorageError):
    """A file where a folder is needed or the other way round, or a symbolic link."""


def check_namespace(namespace: str) -> str:
    """`namespace` if flows may use it as their namespace (the flow model's rule), else
    StorageError. `company` and `company.team` are two namespaces with files of their own."""
    # Imported here: the flow model imports the connectors, which import this module.
    from headrace.flow.model import NAMESPACE_PATTERN

    if not isinstance(namespace, str) or not re.fullmatch(NAMESPACE_PATTERN, namespace):
        raise StorageError(
            f"{namespace!r} is not a namespace: lowercase letters, digits, `.`, `_` and `-`,"
            " starting with a letter or a digit (as in flows)"
        )
    if len(namespace.encode()) > MAX_NAME_BYTES:
        raise StorageError(f"namespace {namespace[:40]!r}… is longer than {MAX_NAME_BYTES} bytes")
    return namespace


def namespace_path(path: str) -> PurePosixPath:
    """A path among a namespace's files (`sql/load.sql`), checked. A leading `/` is the
    namespace's root, as Kestra's API writes paths (`/sql/load.sql`): no path leads out
    of the namespace. StorageError saying what is wrong with it."""
    if not isinstance(path, str) or not path.strip("/"):
        raise StorageError("no path given: name a file or folder of the namespace")
    if "\0" in path:
        raise StorageError(f"{path!r}: a path cannot hold a NUL character")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StorageError(f"{path!r} is not UTF-8 text") from exc
    parts = path.strip("/").split("/")
    if ".." in parts:
        raise StorageError(f"{path!r} leads out of the namespace's files (`..`)")
    for part in parts:
        if part.startswith(WRITING_PREFIX):
            raise StorageError(f"{path!r}: names starting with {WRITING_PREFIX!r} are reserved")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise StorageError(f"{path!r}: a name is longer than {MAX_NAME_BYTES} bytes")
    pure = PurePosixPath(path.strip("/"))  # drops empty and `.` parts
    if not pure.parts:  # nothing but `.`
        raise StorageError(f"{path!r} is not a file path inside the namespace")
    return pure


def namespace_file_uri(namespace: str, path: str) -> str:
    """`headrace:///{namespace}/_files/{path}`: the URI of a namespace file."""
    return make_uri(check_namespace(namespace), NAMESPACE_FILES, *namespace_path(path).parts)


@dataclass(frozen=True, slots=True)
class NamespaceEntry:
    """A file or folder among a namespace's files, as a listing finds it."""

    path: str  # relative to the folder listed, `/`-separated: `models/orders.sql`
    kind: str  # "file", "directory", or "other": a symbolic link, a pipe, a device
    size: int  # bytes (0 for a folder)
    modified: float  # seconds since the epoch
    sha256: str | None = None  # files only, when asked for


# ------------------------------------------------------------------ operations


def _files_folder(
    storage: Storage, namespace: str, parts: Sequence[str], *, create: bool = False
) -> int | None:
    """A descriptor of the folder `parts` among `namespace`'s files (close it), None
    when the namespace has no files at all; NotInStorage, StorageConflict."""
    check_namespace(namespace)
    if create:
        storage.root.mkdir(parents=True, exist_ok=True)
    try:
        top = open_directory(storage.root, (namespace, NAMESPACE_FILES), create=create)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise StorageConflict(
                f"namespace {namespace}: its files' folder in the storage is not a folder"
                " (a link or a file): refused"
            ) from None
        raise
    try:
        return open_directory(top, parts, create=create)
    except OSError as exc:
        raise _namespace_error(exc, namespace, "folder") from None
    finally:
        os.close(top)


def namespace_files(
    storage: Storage,
    namespace: str,
    folder: str = "",
    *,
    recursive: bool = True,
    sha256: bool = False,
    limit: int | None = None,
) -> list[NamespaceEntry]:
    """What the folder `folder` of `namespace`'s files holds ("" or "/": all of
    them), sorted, with paths relative to that folder: every file and folder below
    it when `recursive`, else its own entries. Links and other non-files are listed
    as kind "other", never followed. A namespace without files lists nothing; a
    folder that is not there is NotInStorage. `sha256`: files carry their digest.
    `limit`: finding more entries is a StorageError."""
    parts = namespace_path(folder).parts if folder.strip("/") else ()
    fd = _files_folder(storage, namespace, parts)
    if fd is None:
        if parts:
            raise NotInStorage(f"namespace {namespace}: no folder {'/'.join(parts)!r}")
        return []
    entries: list[NamespaceEntry] = []
    try:
        with contextlib.closing(_walk(fd, recursive, sha256)) as walk:
            for entry in walk:
                entries.append(entry)
                if limit is not None and len(entries) > limit:
                    raise StorageError(
                        f"namespace {namespace}: more than {limit} entries under"
                        f" {'/'.join(parts) or '/'!r}: list a folder below it"
                    )
    finally:
        os.close(fd)
    return sorted(entries, key=lambda entry: entry.path)


def _parent_folder(storage: Storage, namespace: str, parts: tuple[str, ...]) -> int | None:
    """A descriptor of the folder holding `parts` among `namespace`'s files (close it);
    None when that folder, or the namespace's files, are not there."""
    try:
        return _files_folder(storage, namespace, parts[:-1])
    except NotInStorage:
        return None


def namespace_entry(storage: Storage, namespace: str, path: str) -> NamespaceEntry | None:
    """The file or folder `path` of `namespace` (a link: kind "other"), its `path`
    as checked (`sql/load.sql`); None when there is none."""
    parts = namespace_path(path).parts
    fd = _parent_folder(storage, namespace, parts)
    if fd is None:
        return None
    try:
        info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    return _entry("/".join(parts), info)


def open_namespace_file(storage: Storage, namespace: str, path: str) -> IO[bytes]:
    """The file `path` of `namespace` opened for reading: NotInStorage when it is not
    there, StorageConflict when it or a folder on its way is a link or no file."""
    parts = namespace_path(path).parts
    missing = NotInStorage(f"namespace {namespace}: no file {'/'.join(parts)!r}")
    fd = _files_folder(storage, namespace, ())
    if fd is None:
        raise missing
    try:
        return open_file(fd, parts)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the file, or a folder on its way
            raise missing from None
        raise _namespace_error(exc, namespace, "file") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def namespace_file_writer(storage: Storage, namespace: str, path: str) -> Iterator[IO[bytes]]:
    """A binary file to fill that becomes the file `path` of `namespace` when the
    block ends without error, as `Storage.writer` does (missing folders are made),
    walking there without following a link."""
    parts = namespace_path(path).parts
    where = "/".join(parts)
    fd = _files_folder(storage, namespace, parts[:-1], create=True)
    assert fd is not None  # made when missing
    try:
        temporary = WRITING_PREFIX + secrets.token_hex(8)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            file_fd = os.open(temporary, flags, 0o600, dir_fd=fd)
        except FileNotFoundError:
            raise StorageError(
                f"namespace {namespace}: the folder of {where!r} was deleted while it was"
                " being written: write it again"
            ) from None
        try:
            with os.fdopen(file_fd, "wb") as file:
                yield file
            try:
                os.replace(temporary, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
            except OSError as exc:
                failed = OSError(exc.errno, exc.strerror, where)
                raise _namespace_error(failed, namespace, "file") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=fd)
            raise
    finally:
        os.close(fd)


def put_namespace_file(storage: Storage, namespace: str, path: str, source: IO[bytes]) -> int:
    """Write what `source` holds as the file `path` of `namespace`; its size."""
    with namespace_file_writer(storage, namespace, path) as out:
        shutil.copyfileobj(source, out, _CHUNK_BYTES)
        return out.tell()


def delete_namespace_file(storage: Storage, namespace: str, path: str) -> bool:
    """Remove the file `path` of `namespace` (a link: the link itself); False when
    there was none, StorageConflict when it is a folder."""
    parts = namespace_path(path).parts
    fd = _parent_folder(storage, namespace, parts)
    if fd is None:
        return False
    try:
        info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            raise StorageConflict(
                f"namespace {namespace}: {'/'.join(parts)!r} is a folder, not a file"
            )
        os.unlink(parts[-1], dir_fd=fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


def delete_namespace_folder(storage: Storage, namespace: str, path: str) -> int | None:
    """Remove the folder `path` of `namespace` and all it holds; how many files (and
    links) went, None when there was no such folder, StorageConflict when it is
    not a folder."""
    parts = namespace_path(path).parts
    fd = _parent_folder(storage, namespace, parts)
    if fd is None:
        return None
    try:
        info = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISDIR(info.st_mode):
            raise StorageConflict(f"namespace {namespace}: {'/'.join(parts)!r} is not a folder")
        inner = open_directory(fd, parts[-1:])
        try:
            with contextlib.closing(_walk(inner, True, False)) as walk:
                count = sum(entry.kind != "directory" for entry in walk)
        finally:
            os.close(inner)
        # With a descriptor, rmtree removes what is below without following links.
        shutil.rmtree(parts[-1], dir_fd=fd)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    return count


# ------------------------------------------------------------------ helpers


def _namespace_error(exc: OSError, namespace: str, what: str) -> StorageError | OSError:
    """The StorageError a failed step among `namespace`'s files means (`what`: "file",
    "folder"); other errors (no space, no permission) stay what they are."""
    where = exc.filename or "?"
    if exc.errno == errno.ENOENT:
        return NotInStorage(f"namespace {namespace}: no {what} {where!r}")
    if exc.errno == errno.ENOTDIR:
        return StorageConflict(f"namespace {namespace}: {where!r} is a file, not a folder")
    if exc.errno == errno.EISDIR:
        return StorageConflict(f"namespace {namespace}: {where!r} is a folder, not a file")
    if exc.errno == errno.ENXIO:  # `open_file`: a named pipe, a device or a socket
        return StorageConflict(f"namespace {namespace}: {where!r} is not a regular file")
    if exc.errno == errno.ELOOP:
        return StorageConflict(
            f"namespace {namespace}: {where!r} is a symbolic link, which could lead out of"
            " the namespace's files: refused"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(f"namespace {namespace}: {where!r} is too long a path")
    return exc


def _entry(path: str, info: os.stat_result, sha256: str | None = None) -> NamespaceEntry:
    if stat.S_ISDIR(info.st_mode):
        kind = "directory"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    size = info.st_size if kind == "file" else 0
    return NamespaceEntry(path, kind, size, info.st_mtime, sha256)


def _file_sha256(name: str, dir_fd: int) -> str | None:
    """The SHA-256 of the regular file `name` (hex); None when it is no longer one."""
    try:
        file = open_file(dir_fd, (name,))
    except OSError:
        return None
    with file:
        digest = hashlib.sha256()
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
        return digest.hexdigest()


def _walk(folder_fd: int, recursive: bool, sha256: bool) -> Iterator[NamespaceEntry]:
    """The entries of the folder `folder_fd` (and of every folder below it when
    `recursive`), never entering a link; temporary files of writes left out."""
    stack: list[tuple[str, int]] = [("", os.dup(folder_fd))]
    try:
        while stack:
            prefix, fd = stack.pop()
            try:
                with os.scandir(fd) as scan:
                    names = sorted(entry.name for entry in scan)
                for name in names:
                    if name.startswith(WRITING_PREFIX):
                        continue
                    try:
                        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted meanwhile
                    path = prefix + name
                    digest = None
                    if sha256 and stat.S_ISREG(info.st_mode):
                        digest = _file_sha256(name, fd)
                    yield _entry(path, info, digest)
                    if recursive and stat.S_ISDIR(info.st_mode):
                        try:
                            inner = open_directory(fd, (name,))
                        except OSError:
                            continue  # replaced or removed meanwhile
                        stack.append((path + "/", inner))
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)
