"""The files of a script task: `inputFiles` written before it runs, `outputFiles` read after.

Paths are relative to the directory the task's commands run in, and stay inside it: an
absolute path, a `..` step or a symbolic link on the way is refused, naming the file.
Input files are written through directory descriptors opened without following links,
so a link placed in the directory (by a `workingDirectory`'s owner, an earlier file)
cannot redirect a write elsewhere. An input file whose value is a storage URI
(`headrace:///…`, a STORE result's `uri`) is copied from the file storage, a chunk at a
time, the same way; the task reads only its own namespace's files. Output files are found by walking the directory
without following links, and a file that resolves outside it is refused.

Only regular files are written or read: a named pipe (which a task can leave, or a
`workingDirectory` hold), a device or a socket in a file's place fails the task naming
it. Files are opened without waiting (`O_NONBLOCK`), then checked: opening a pipe
otherwise waits for its other end, forever, in a thread that a cancellation cannot stop.

Output files are not put in the file storage: they come back as text, in the task's
outputs (`outputFiles: {path: content}`), within the 256 KiB the outputs of a task may hold. A
file that does not fit, or is not UTF-8 text, fails the task naming it: nothing is
truncated or dropped silently.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import orjson

from headrace.connectors.base import MAX_OUTPUTS_BYTES, TaskFailed, no_storage
from headrace.storage import StorageError, TaskFiles, is_uri, parse_uri

# The worker refuses outputs over MAX_OUTPUTS_BYTES of JSON; checking it here lets the
# error name the file that did not fit.

# Names a task's own files take in its attempt directory (its script, helpers): an input
# file may not overwrite them, and output patterns do not collect them.
RESERVED_PREFIX = ".headrace"
_MAGIC = re.compile(r"[*?[]")
COPY_CHUNK_BYTES = 1024 * 1024  # a stored input file is copied this much at a time


def check_relative_path(path: str, what: str) -> str:
    """`path` as given, if it names a file inside the working directory; else ValueError
    with a sentence naming it (`what`: "inputFiles", "outputFiles")."""
    if not path.strip():
        raise ValueError(f"{what}: a path is empty")
    if "\0" in path:
        raise ValueError(f"{what} {path!r}: a path cannot hold a NUL character")
    if path.startswith("/"):
        raise ValueError(
            f"{what} {path!r} is an absolute path: give a path relative to the task's"
            " working directory"
        )
    parts = PurePosixPath(path).parts
    if ".." in parts:
        raise ValueError(f"{what} {path!r} leads out of the task's working directory (`..`)")
    if not parts:
        raise ValueError(f"{what} {path!r} names the working directory itself, not a file")
    if parts[0].startswith(RESERVED_PREFIX):
        raise ValueError(
            f"{what} {path!r}: names starting with {RESERVED_PREFIX!r} are the task's own"
        )
    return path


def check_input_files(files: Mapping[str, str]) -> Mapping[str, str]:
    """Every key a file path inside the working directory, no two naming one file; a
    value that is a storage URI names a storage file."""
    seen: dict[PurePosixPath, str] = {}
    for path, content in files.items():
        check_relative_path(path, "inputFiles")
        if path.endswith("/"):
            raise ValueError(f"inputFiles {path!r} names a directory: give a file name")
        normal = PurePosixPath(path)
        if normal in seen:
            raise ValueError(f"inputFiles {seen[normal]!r} and {path!r} name the same file")
        seen[normal] = path
        if is_uri(content):
            try:
                parse_uri(content)
            except StorageError as exc:
                raise ValueError(f"inputFiles {path!r}: {exc}") from None
    return files


def check_output_pattern(pattern: str) -> str:
    return check_relative_path(pattern, "outputFiles")


# ------------------------------------------------------------------ input files


def write_input_files(
    root: Path,
    files: Mapping[str, str],
    reserved: Iterable[str] = (),
    *,
    stored: TaskFiles | None = None,
) -> None:
    """Write `files` (relative path -> text, or a storage URI) under `root`, creating
    subdirectories. Blocking: call it off the event loop.

    A value that is a storage URI (`headrace:///…`) is the file `stored` may read
    (`TaskFiles.open`: its own namespace's), copied in a chunk at a time. Raises
    `TaskFailed` naming the file when one cannot be written: a reserved name (the task's
    own script), a symbolic link on its way, a file where a directory should be, a URI
    of another namespace or of no file (a link or a non-file in the storage included),
    or no storage to read it from.
    """
    taken = set(reserved)
    for path in files:
        if PurePosixPath(path).parts[0] in taken:
            raise TaskFailed(f"inputFiles {path!r}: that name is taken by the task's own script")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TaskFailed(f"inputFiles: cannot open the working directory {root}: {exc}") from exc
    try:
        for path, content in files.items():
            parts = PurePosixPath(path).parts
            if is_uri(content):
                _copy_stored_file(root_fd, parts, path, content, stored)
                continue
            try:
                with _open_target(root_fd, parts) as file:
                    file.write(content.encode("utf-8"))
            except OSError as exc:
                raise TaskFailed(f"inputFiles {path!r}: {_write_error(exc)}") from exc
    finally:
        os.close(root_fd)


def _copy_stored_file(
    root_fd: int, parts: tuple[str, ...], path: str, uri: str, stored: TaskFiles | None
) -> None:
    """The storage file `uri` copied to `parts` under `root_fd`, a chunk at a time."""
    if stored is None:
        raise no_storage(f"inputFiles {path!r} is a storage URI")
    try:
        # Its own namespace's, a regular file reached without following a link (any task
        # may write links into the storage): see Storage.open.
        source = stored.open(uri)
    except StorageError as exc:
        raise TaskFailed(f"inputFiles {path!r}: {exc}") from None
    except OSError as exc:
        raise TaskFailed(
            f"inputFiles {path!r}: {uri}: could not read it: {exc.strerror or exc}"
        ) from None
    with source:
        try:
            with _open_target(root_fd, parts) as target:
                shutil.copyfileobj(source, target, COPY_CHUNK_BYTES)
        except OSError as exc:
            raise TaskFailed(f"inputFiles {path!r}: {_write_error(exc)}") from exc


def _open_target(root_fd: int, parts: tuple[str, ...]) -> BinaryIO:
    """The file `parts` under `root_fd`, created or emptied, open for writing; reached
    without following a link, and only a regular file."""
    *directories, name = parts
    fd = os.dup(root_fd)
    try:
        for directory in directories:
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory, dir_fd=fd)
            # O_NOFOLLOW: a symbolic link here fails instead of being entered.
            try:
                inner = os.open(
                    directory,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=fd,
                )
            except NotADirectoryError:
                # Linux says ENOTDIR for a link here: tell a link from a plain file.
                if stat.S_ISLNK(os.lstat(directory, dir_fd=fd).st_mode):
                    raise OSError(errno.ELOOP, "a symbolic link", directory) from None
                raise
            os.close(fd)
            fd = inner
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            file_fd = os.open(name, flags | os.O_NONBLOCK, 0o666, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # a pipe nobody reads, or a socket
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
                raise NotARegularFile(name, _special_kind(mode)) from None
            raise
        file = open(file_fd, "wb")  # noqa: SIM115 (the caller's to close)
        if not stat.S_ISREG(mode := os.fstat(file_fd).st_mode):
            file.close()
            raise NotARegularFile(name, _special_kind(mode))
        return file  # (O_NONBLOCK changes nothing for a regular file)
    finally:
        os.close(fd)


class NotARegularFile(OSError):
    """A named pipe, a device or a socket where a file is to be read or written."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(errno.EINVAL, f"{name!r} is {kind}, not a regular file: refused", name)


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a directory" if stat.S_ISDIR(mode) else "not a file"


def _write_error(exc: OSError) -> str:
    if isinstance(exc, NotARegularFile):
        return str(exc.strerror)
    if exc.errno == errno.ELOOP:
        return (
            f"{exc.filename!r} is a symbolic link, which could lead out of the working"
            " directory: refused"
        )
    if exc.errno == errno.ENOTDIR:
        return f"{exc.filename!r} is a file, not a directory"
    if exc.errno == errno.EISDIR:
        return "a directory of that name exists"
    return f"could not write it: {exc.strerror or exc}"


# ------------------------------------------------------------------ output files


def collect_output_files(
    root: Path, patterns: Iterable[str], exclude: Iterable[str] = ()
) -> dict[str, str]:
    """The text of the files under `root` that `patterns` name, by relative path.

    A pattern without wildcards must name a file that exists; one with wildcards (`*`,
    `?`, `[...]`, and `**` for any number of directories) may match none. Wildcards do
    not match names starting with a dot unless the pattern's part does, as in a shell.
    `exclude`: top-level names a wildcard never collects (the task's own script).

    Raises `TaskFailed` naming the file when one is missing, a directory, a link out of
    `root`, not UTF-8 text, or more than the outputs may hold.
    """
    real_root = Path(os.path.realpath(root))
    excluded = set(exclude)
    found: dict[str, None] = {}  # ordered, without duplicates
    for pattern in patterns:
        if _MAGIC.search(pattern):
            for path in _matches(root, pattern):
                if PurePosixPath(path).parts[0] not in excluded:
                    found.setdefault(path, None)
        else:
            found.setdefault(_existing_file(root, pattern), None)
    contents: dict[str, str] = {}
    budget = MAX_OUTPUTS_BYTES
    for path in sorted(found):
        content = _read_text(root / path, real_root, path, budget)
        budget -= len(orjson.dumps({path: content}))
        contents[path] = content
    return contents


def _existing_file(root: Path, pattern: str) -> str:
    path = str(PurePosixPath(pattern))
    full = root / path
    if full.is_dir():
        raise TaskFailed(
            f"outputFiles {pattern!r} is a directory: name its files, or a pattern such as"
            f" '{path}/**'"
        )
    if not os.path.lexists(full):  # a link is checked where it leads, when read
        raise TaskFailed(f"outputFiles {pattern!r}: the task did not create this file")
    return path


def _matches(root: Path, pattern: str) -> Iterator[str]:
    """Relative paths of the files (and links) under `root` that `pattern` matches,
    walking only below the pattern's literal prefix and never through a link."""
    parts = PurePosixPath(pattern).parts
    literal = 0
    while literal < len(parts) and not _MAGIC.search(parts[literal]):
        literal += 1
    prefix, rest = parts[:literal], parts[literal:]
    base = root.joinpath(*prefix)
    if base.is_symlink() or not base.is_dir():
        return
    # Without `**` a pattern has a fixed depth: no need to walk any deeper.
    max_depth = None if "**" in rest else len(rest) - 1
    hidden_wanted = any(part.startswith(".") for part in rest)
    # os.walk does not enter links to directories (followlinks=False): a loop of links
    # cannot make it run forever, and no file outside `root` is reached through one.
    for directory, subdirectories, files in os.walk(base):
        relative = PurePosixPath(directory).relative_to(PurePosixPath(base)).parts
        if max_depth is not None and len(relative) >= max_depth:
            subdirectories.clear()
        elif not hidden_wanted:  # `.git`, `.venv`: wildcards match nothing in them
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for name in files:
            candidate = (*relative, name)
            if _match_parts(rest, candidate):
                yield str(PurePosixPath(*prefix, *candidate))


def _match_parts(pattern: tuple[str, ...], path: tuple[str, ...]) -> bool:
    if not pattern:
        return not path
    head, tail = pattern[0], pattern[1:]
    if head == "**":
        # Zero or more directories (not hidden ones), then the rest of the pattern.
        for skip in range(len(path) + 1):
            if any(part.startswith(".") for part in path[:skip]):
                break
            if _match_parts(tail, path[skip:]):
                return True
        return False
    if not path:
        return False
    name = path[0]
    if name.startswith(".") and not head.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, head) and _match_parts(tail, path[1:])


def _read_text(full: Path, real_root: Path, path: str, budget: int) -> str:
    real = Path(os.path.realpath(full))
    if not real.is_relative_to(real_root):
        raise TaskFailed(
            f"outputFiles {path!r} is a symbolic link leading out of the task's working"
            " directory: refused"
        )
    if real.is_dir():
        raise TaskFailed(f"outputFiles {path!r} is a link to a directory: name its files")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as file:
            if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
                raise TaskFailed(
                    f"outputFiles {path!r} is {_special_kind(mode)}, not a regular file: refused"
                )
            data = file.read(budget + 1)  # (O_NONBLOCK changes nothing for a regular file)
    except OSError as exc:
        raise TaskFailed(f"outputFiles {path!r}: could not read it: {exc.strerror}") from exc
    too_large = (
        f"outputFiles {path!r} does not fit in the task's outputs ({MAX_OUTPUTS_BYTES // 1024}"
        " KiB in all, files included): output files come back as text in the outputs, not"
        " in the file storage; write large files elsewhere (object storage, a database)"
        " and output their location"
    )
    if len(data) > budget:
        raise TaskFailed(too_large)
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFailed(
            f"outputFiles {path!r} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset"
            f" {exc.start}): output files come back as text in the outputs, so a binary"
            " file cannot; encode it (base64) or write it elsewhere and output its location"
        ) from None
    if len(orjson.dumps({path: content})) > budget:  # escapes (\n, \") count too
        raise TaskFailed(too_large)
    return content
