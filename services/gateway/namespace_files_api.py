"""`/api/v1/namespaces/{namespace}/files`: a namespace's own files (Kestra's routes).

- `GET …/files/directory?path=<folder>`: the folder's entries, as Kestra lists them
  (`fileName`, `type` File or Directory, `size`, `lastModifiedTime` in epoch
  milliseconds); no `path`, or `/`: the namespace's root. `recursive=true` lists the
  whole tree below the folder in one answer, flattened: `fileName` is then the path
  relative to the folder (the CLI's `list` and `sync` need the tree, and one request
  beats one per folder), and `sha256=true` adds each file's digest (what `sync`
  compares, rather than downloading every file).
- `GET …/files?path=<file>`: the file's bytes.
- `POST …/files?path=<file>`: create or replace it from the multipart field
  `fileContent` (Kestra's form) or from the raw body; at most MAX_FILE_BYTES (413).
- `DELETE …/files?path=<file or folder>`: a folder goes with all it holds.

Paths are relative to the namespace's root (a leading `/` is that root, as Kestra writes
them): `..`, NUL and names the storage keeps for itself answer 400 with the reason,
what is not there 404, a file where a folder is expected (or the other way round) 409.
Namespaces are the flows' (`company.team`, its own files, apart from `company`'s); a
namespace needs no flow to keep files. POST and DELETE need the writer role, as every
route that changes something (auth.py).

Every storage call runs off the event loop; uploads and downloads are streamed a chunk
at a time, never held whole; an upload becomes the file only once it is whole
(headrace/namespace_storage.py's `namespace_file_writer`), so a refused or broken upload
leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from headrace.namespace_storage import (
    NamespaceEntry,
    NotInStorage,
    StorageConflict,
    check_namespace,
    delete_namespace_file,
    delete_namespace_folder,
    namespace_entry,
    namespace_file_writer,
    namespace_files,
    namespace_path,
    open_namespace_file,
)
from headrace.services.gateway.bodies import query_bool
from headrace.services.gateway.context import gateway
from headrace.services.gateway.files_api import send_file
from headrace.services.gateway.responses import ApiError, json_response
from headrace.storage import Storage, StorageError

log = logging.getLogger(__name__)

# One file's upload at most. Namespace files are code and its small data (SQL, modules,
# a dbt project and its seeds); larger data belongs to tasks' files or object storage.
MAX_FILE_BYTES = 32 * 1024 * 1024
# Entries one listing may return: beyond, list a folder below (bounds the answer).
MAX_LISTED_ENTRIES = 100_000
# Read and written per step: few thread hops, little memory per transfer.
CHUNK_BYTES = 256 * 1024
FORM_FIELD = "fileContent"  # Kestra's multipart field

T = TypeVar("T")
KINDS = {"file": "File", "directory": "Directory"}


def _storage(request: web.Request) -> Storage:
    storage = gateway(request).storage
    if storage is None:
        raise ApiError(503, "this gateway has no file storage (HEADRACE_STORAGE_DIR)")
    return storage


def _namespace(request: web.Request) -> str:
    try:
        return check_namespace(request.match_info["namespace"])
    except StorageError as exc:
        raise ApiError(400, str(exc)) from exc


def _path(request: web.Request) -> str:
    """The `path` query parameter, checked: a path among the namespace's files."""
    path = request.query.get("path", "")
    if not path.strip("/"):
        raise ApiError(400, "the query parameter `path` is required: a file or folder path")
    try:
        return str(namespace_path(path))
    except StorageError as exc:
        raise ApiError(400, str(exc)) from exc


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`function` run in a thread, its storage errors turned into answers."""
    try:
        return await asyncio.to_thread(function, *args, **kwargs)
    except NotInStorage as exc:
        raise ApiError(404, str(exc)) from exc
    except StorageConflict as exc:
        raise ApiError(409, str(exc)) from exc
    except StorageError as exc:
        raise ApiError(400, str(exc)) from exc


def _entry_json(entry: NamespaceEntry) -> dict[str, Any]:
    body: dict[str, Any] = {
        "fileName": entry.path,
        "type": KINDS[entry.kind],
        "size": entry.size,
        "lastModifiedTime": int(entry.modified * 1000),
    }
    if entry.sha256 is not None:
        body["sha256"] = entry.sha256
    return body


async def list_directory(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    folder = request.query.get("path", "")
    recursive = query_bool(request, "recursive")
    entries = await _call(
        namespace_files,
        _storage(request),
        namespace,
        folder,
        recursive=recursive,
        sha256=query_bool(request, "sha256"),
        limit=MAX_LISTED_ENTRIES,
    )
    # Links and pipes are no namespace files (only a task writing into the storage
    # makes them): not listed, never served.
    return json_response([_entry_json(entry) for entry in entries if entry.kind in KINDS])


async def download_file(request: web.Request) -> web.StreamResponse:
    namespace, path = _namespace(request), _path(request)
    handle: IO[bytes] = await _call(open_namespace_file, _storage(request), namespace, path)
    size = os.fstat(handle.fileno()).st_size
    return await send_file(request, handle, size, path.rsplit("/", 1)[-1])


def _too_large() -> ApiError:
    return ApiError(
        413,
        f"a namespace file may hold at most {MAX_FILE_BYTES // (1024 * 1024)} MiB"
        f" ({MAX_FILE_BYTES} bytes): keep larger data in a task's files or object storage",
    )


async def _file_part(request: web.Request) -> BodyPartReader:
    """The form's `fileContent` part, ready to be read."""
    try:
        form = await request.multipart()
        while (part := await form.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "a nested multipart body is not a file: send `fileContent`")
            if part.name == FORM_FIELD:
                return part
            raise ApiError(
                400, f"unexpected form field {part.name!r}: send the file as `{FORM_FIELD}`"
            )
    # No boundary, bad framing; a part's header aiohttp cannot parse (BadHttpMessage).
    except (ValueError, AssertionError, LookupError, BadHttpMessage) as exc:
        raise ApiError(400, f"malformed multipart/form-data body: {exc}") from exc
    raise ApiError(400, f"the form has no `{FORM_FIELD}` field: send the file in it")


async def _receive(
    storage: Storage, namespace: str, path: str, read: Callable[[], Awaitable[bytes]]
) -> None:
    """Write what `read()` gives, to its end (b""), as the file `path`: whole or not at
    all, and refused (413) past MAX_FILE_BYTES."""
    writer = namespace_file_writer(storage, namespace, path)
    out = await _call(writer.__enter__)
    size = 0
    try:
        while chunk := await read():
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise _too_large()
            await asyncio.to_thread(out.write, chunk)
    except BaseException as exc:
        # Removes the temporary file: quick, and done even when cancelled.
        writer.__exit__(type(exc), exc, exc.__traceback__)
        raise
    await _call(writer.__exit__, None, None, None)


async def upload_file(request: web.Request) -> web.Response:
    namespace = _namespace(request)
    if request.query.get("path", "").endswith("/"):
        raise ApiError(400, "the path names a folder (it ends with `/`): give a file's path")
    path, storage = _path(request), _storage(request)
    if request.content_type == "multipart/form-data":
        part = await _file_part(request)

        async def read() -> bytes:
            try:
                return await part.read_chunk(CHUNK_BYTES)
            except ValueError as exc:  # a broken part
                raise ApiError(400, f"malformed multipart/form-data body: {exc}") from exc

    else:
        if (request.content_length or 0) > MAX_FILE_BYTES:
            raise _too_large()  # announced: refused before a byte is stored

        async def read() -> bytes:
            return await request.content.read(CHUNK_BYTES)

    await _receive(storage, namespace, path, read)
    entry = await _call(namespace_entry, storage, namespace, path)
    if entry is None:  # deleted again at once
        raise ApiError(404, f"namespace {namespace}: no file {path!r}")
    return json_response(_entry_json(entry))


async def delete_path(request: web.Request) -> web.Response:
    namespace, path, storage = _namespace(request), _path(request), _storage(request)
    entry = await _call(namespace_entry, storage, namespace, path)
    if entry is not None and entry.kind == "directory":
        count = await _call(delete_namespace_folder, storage, namespace, path)
        if count is not None:
            return json_response({"path": path, "type": "Directory", "deletedFiles": count})
    elif entry is not None and await _call(delete_namespace_file, storage, namespace, path):
        return json_response({"path": path, "type": "File", "deletedFiles": 1})
    raise ApiError(404, f"namespace {namespace}: no file or folder {path!r}")


def add_routes(app: web.Application, prefix: str) -> None:
    files = prefix + "/namespaces/{namespace}/files"
    app.router.add_get(files + "/directory", list_directory)
    app.router.add_get(files, download_file)
    app.router.add_post(files, upload_file)
    app.router.add_delete(files, delete_path)
