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

Output files go to the file storage, as in Kestra: each one is copied there (a chunk at a
time, whole or not at all) and the output `outputFiles` maps its relative path to its
storage URI (`headrace:///…`), which `read()`, a later task's `inputFiles` and the API's
download take. So files of any size and any content come back; only their URIs must fit in
the task's outputs. A file that is UTF-8 text is stored with the worker's secrets masked,
as the outputs it used to be part of are (a reader of the execution may download it); any
other file is stored byte for byte. Without a file storage (a connector's tests, a tool),
a task that matches output files fails saying so: giving their text inline instead would
make the same flow's outputs differ in shape from one worker to the next.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import orjson

from headrace.connectors.base import MAX_OUTPUTS_BYTES, TaskFailed, no_storage
from headrace.storage import StorageError, TaskFiles, is_uri, parse_uri, stored_file

# The worker refuses outputs over MAX_OUTPUTS_BYTES of JSON: the URIs of the output files
# may take this much of them, checked before anything is stored so the error can say why.
OUTPUT_FILES_BUDGET_BYTES = MAX_OUTPUTS_BYTES * 3 // 4
STORED_DIGEST_CHARS = 12  # of a stored output file's name: 48 bits tell paths apart
MAX_STORED_NAME_BYTES = 255  # what file systems take as one name (Linux's NAME_MAX)
# Names a task's own files take in its attempt directory (its script, helpers): an input
# file may not overwrite them, and output patterns do not collect them.
RESERVED_PREFIX = ".headrace"
_MAGIC = re.compile(r"[*?[]")
COPY_CHUNK_BYTES = 1024 * 1024  # a stored input file is copied this much at a time
# Kestra's pattern of an internal storage URI in a script's text
# (io.kestra.core.models.script.ScriptService.INTERNAL_STORAGE_PATTERN), for our scheme.
STORAGE_URI_IN_TEXT = re.compile(r"headrace:///[-a-zA-Z0-9%._+~#=/]*")
LOCAL_COPIES = f"{RESERVED_PREFIX}-files"  # in the attempt's folder: copies of those files


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


# ------------------------------------------------------------------ URIs in commands


def localize_storage_uris(
    texts: Sequence[str], workdir: Path, stored: TaskFiles | None, what: str
) -> list[str]:
    """`texts` with each storage URI in them replaced by the absolute path of a copy of
    its file, made in `workdir` (the attempt's own folder), as Kestra does with its
    internal storage URIs in a script's commands (`cat {{ outputs.t.outputFiles['a'] }}`).
    Blocking: call it off the event loop.

    A URI is what Kestra's pattern takes after the scheme (letters, digits and
    `-%._+~#=/`); each file is copied once, read as `inputFiles` reads (`stored.open`:
    its own namespace's). TaskFailed naming `what` and the URI when one cannot be read.
    """
    copies: dict[str, str] = {}

    def local(match: re.Match[str]) -> str:
        uri = match.group()
        if uri not in copies:
            copies[uri] = _local_copy(uri, workdir / LOCAL_COPIES, stored, what)
        return copies[uri]

    return [STORAGE_URI_IN_TEXT.sub(local, text) for text in texts]


def _local_copy(uri: str, folder: Path, stored: TaskFiles | None, what: str) -> str:
    """The path of the copy of `uri` in `folder`, made unless an earlier call made it."""
    if stored is None:
        raise no_storage(f"{what} name the storage file {uri}")
    try:
        name = re.sub(r"[^A-Za-z0-9._-]", "_", stored_file(uri).name)
    except StorageError as exc:
        raise TaskFailed(f"{what}: {exc}") from None
    digest = hashlib.sha256(uri.encode()).hexdigest()[:STORED_DIGEST_CHARS]
    target = folder / f"{digest}-{name}"[:MAX_STORED_NAME_BYTES]
    if target.exists():  # the same URI in the script and in beforeCommands
        return str(target)
    try:
        source = stored.open(uri)
    except StorageError as exc:
        raise TaskFailed(f"{what}: {exc}") from None
    except OSError as exc:
        raise TaskFailed(f"{what}: {uri}: could not read it: {exc.strerror or exc}") from None
    with source:
        try:
            folder.mkdir(exist_ok=True)
            with open(target, "xb") as out:  # a new file of the attempt's own folder
                shutil.copyfileobj(source, out, COPY_CHUNK_BYTES)
        except OSError as exc:
            raise TaskFailed(
                f"{what}: {uri}: could not copy it for the task: {exc.strerror or exc}"
            ) from None
    return str(target)


# ------------------------------------------------------------------ output files


def output_file_paths(
    root: Path, patterns: Iterable[str], exclude: Iterable[str] = ()
) -> list[str]:
    """The relative paths of the files under `root` that `patterns` name, sorted.

    A pattern without wildcards must name a file that exists; one with wildcards (`*`,
    `?`, `[...]`, and `**` for any number of directories) may match none. Wildcards do
    not match names starting with a dot unless the pattern's part does, as in a shell.
    `exclude`: top-level names a wildcard never collects (the task's own script).
    Raises `TaskFailed` naming a missing file or a directory.
    """
    excluded = set(exclude)
    found: dict[str, None] = {}  # ordered, without duplicates
    for pattern in patterns:
        if _MAGIC.search(pattern):
            for path in _matches(root, pattern):
                if PurePosixPath(path).parts[0] not in excluded:
                    found.setdefault(path, None)
        else:
            found.setdefault(_existing_file(root, pattern), None)
    return sorted(found)


def store_output_files(
    root: Path,
    patterns: Iterable[str],
    exclude: Iterable[str] = (),
    *,
    stored: TaskFiles | None,
    mask: Callable[[str], str] = str,
) -> dict[str, str]:
    """Write the files under `root` that `patterns` name (`output_file_paths`) to the
    file storage: their storage URIs, by relative path. Blocking: call it off the event
    loop.

    Each file is copied a chunk at a time, whole or not at all (`TaskFiles.writer`).
    UTF-8 text goes through `mask` (the worker's secrets, as in outputs), line by line;
    any other file is copied byte for byte. Raises `TaskFailed` naming the file when one
    is missing, a directory, a link out of `root`, a pipe or device, when the URIs do not
    fit in the outputs, or when there is no storage.
    """
    paths = output_file_paths(root, patterns, exclude)
    if not paths:
        return {}
    if stored is None:
        raise no_storage(f"outputFiles {paths[0]!r} is to be kept in the file storage")
    uris = {path: stored.uri(_stored_name(path)) for path in paths}
    _check_outputs_size(uris)
    real_root = Path(os.path.realpath(root))
    for path in paths:
        _store_file(root / path, real_root, path, stored, mask)
    return uris


def _stored_name(path: str) -> str:
    """The name the file `path` gets in its task run's storage folder, which is flat: the
    file's own name after a digest of its path (`out/a.csv` and `a.csv` differ), as
    Kestra names output files. TaskFailed for a name the storage cannot hold."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise TaskFailed(
            f"outputFiles {path!r}: the file's name is not UTF-8, which URIs and outputs"
            " need: rename it"
        ) from None
    digest = hashlib.sha256(encoded).hexdigest()[:STORED_DIGEST_CHARS]
    name = f"{digest}-{PurePosixPath(path).name}"
    # Within a file system's name length, at a character's boundary.
    return name.encode()[:MAX_STORED_NAME_BYTES].decode("utf-8", errors="ignore")


def _check_outputs_size(uris: Mapping[str, str]) -> None:
    size = len(orjson.dumps(uris))
    if size > OUTPUT_FILES_BUDGET_BYTES:
        raise TaskFailed(
            f"outputFiles matched {len(uris)} files, whose URIs take {size} bytes of the"
            f" task's outputs, over the {OUTPUT_FILES_BUDGET_BYTES // 1024} KiB they may"
            " hold: match fewer files, or put them in one archive (tar, zip) and list that"
        )


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


def _store_file(
    full: Path, real_root: Path, path: str, stored: TaskFiles, mask: Callable[[str], str]
) -> None:
    """The file `full` (`path` under the working directory) copied into the storage as
    `_stored_name(path)`."""
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
    except OSError as exc:
        raise TaskFailed(f"outputFiles {path!r}: could not read it: {exc.strerror}") from exc
    with open(fd, "rb") as source:  # (O_NONBLOCK changes nothing for a regular file)
        if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
            raise TaskFailed(
                f"outputFiles {path!r} is {_special_kind(mode)}, not a regular file: refused"
            )
        try:
            with stored.writer(_stored_name(path)) as target:
                _copy_masked(source, target, mask)
        except OSError as exc:
            raise TaskFailed(
                f"outputFiles {path!r}: could not copy it to the file storage:"
                f" {exc.strerror or exc}"
            ) from exc


class _NotText(Exception):
    """The file being copied is not UTF-8 text: it is copied as it is instead."""


def _copy_masked(source: BinaryIO, target: BinaryIO, mask: Callable[[str], str]) -> None:
    """`source` into `target`, masked line by line: as UTF-8 text, or, for any other file
    (an archive, a Latin-1 log), byte for byte read as Latin-1, so that a secret's ASCII
    form is masked there too and every other byte is kept as it was."""
    try:
        _copy_text(source, target, mask)
    except _NotText:
        source.seek(0)
        target.seek(0)
        target.truncate()
        _copy_text(source, target, mask, encoding="latin-1")


def _copy_text(
    source: BinaryIO, target: BinaryIO, mask: Callable[[str], str], encoding: str = "utf-8"
) -> None:
    """Decode, mask and write `source` a chunk at a time, each chunk cut after a line
    (so that no secret is split between two), or at COPY_CHUNK_BYTES in a longer line.
    Raises `_NotText` at the first byte that is not in `encoding`."""
    decoder = codecs.getincrementaldecoder(encoding)()
    pending = ""
    while True:
        chunk = source.read(COPY_CHUNK_BYTES)
        try:
            pending += decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            raise _NotText from None
        if not chunk:
            break
        cut = pending.rfind("\n") + 1
        if cut == 0 and len(pending) < COPY_CHUNK_BYTES:
            continue  # a long line: wait for its end
        cut = cut or len(pending)
        target.write(_masked(pending[:cut], mask).encode(encoding, errors="replace"))
        pending = pending[cut:]
    target.write(_masked(pending, mask).encode(encoding, errors="replace"))


def _masked(text: str, mask: Callable[[str], str]) -> str:
    """`text` with the secrets masked and its NUL characters kept: the worker's masker
    replaces NUL (which outputs cannot hold), and a stored file can hold it."""
    if "\0" not in text:
        return mask(text)
    return "\0".join(mask(part) for part in text.split("\0"))
