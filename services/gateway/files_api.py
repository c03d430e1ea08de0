"""`/api/v1/executions/{id}/file?path=<uri>`: download a file a task of the execution put
in the file storage; `/file/metas?path=<uri>`: its name and size (Kestra's routes).

The URI must name a task file of execution `{id}` (`headrace:///{ns}/{flow}/executions/
{id}/tasks/…`), and the execution must be in the index: a caller who may read an
execution may read its files, and nothing else of the storage. A path that is not a
storage URI answers 400, any other miss 404.

Files are opened by `Storage.open`, one path component at a time, refusing symbolic
links and anything but a regular file at the end: tasks run as the workers' user and can
write into the storage folder, and a link planted there must not make the gateway serve
its own files (its credentials, `/proc/self/environ`). Every blocking call runs off the
event loop, and the body is streamed in chunks, never held whole.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO
from urllib.parse import quote

from aiohttp import hdrs, web

from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import ApiError, json_response
from headrace.storage import Storage, StorageError, StoredFile, stored_file

log = logging.getLogger(__name__)

# Read and written per step: big enough for few thread hops, small enough that many
# downloads at once hold little memory.
CHUNK_BYTES = 256 * 1024


def open_stored(storage: Storage, file: StoredFile) -> tuple[IO[bytes], int]:
    """Blocking: the regular file `file` names, opened for reading (`Storage.open`:
    StorageError when it is missing, or a link or a non-file is on its way), and its
    size, taken from that open file."""
    handle = storage.open(file.uri)
    return handle, os.fstat(handle.fileno()).st_size


async def _open_requested(request: web.Request) -> tuple[StoredFile, IO[bytes], int]:
    """The file `?path=` names, checked against the execution of the URL, opened."""
    gw = gateway(request)
    execution_id = request.match_info["id"]
    uri = request.query.get("path")
    if not uri:
        raise ApiError(400, "the query parameter `path` is required: a file's URI, headrace:///…")
    try:
        file = stored_file(uri)
    except StorageError as exc:
        raise ApiError(400, str(exc)) from exc
    if file.execution_id != execution_id:
        raise ApiError(404, f"{uri} is not a file of execution {execution_id}")
    # The index, as for every read of an execution: an id nobody knows has no files.
    # (A file exists only once a task ran, long after its execution was indexed.)
    if await gw.executions.state(execution_id) is None:
        raise ApiError(404, f"execution {execution_id} not found")
    if gw.storage is None:
        raise ApiError(503, "this gateway has no file storage (HEADRACE_STORAGE_DIR)")
    try:
        handle, size = await asyncio.to_thread(open_stored, gw.storage, file)
    except StorageError as exc:
        raise ApiError(404, str(exc)) from exc
    return file, handle, size


async def file_metas(request: web.Request) -> web.Response:
    file, handle, size = await _open_requested(request)
    await asyncio.to_thread(handle.close)
    return json_response({"uri": file.uri, "name": file.name, "size": size})


def content_disposition(name: str) -> str:
    """`attachment` with the file's name: plain ASCII for every client, and the exact
    name (RFC 6266's `filename*`) for those that read it. A name may hold quotes,
    control characters or any Unicode: none of it reaches the header as it is."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


async def send_file(
    request: web.Request, handle: IO[bytes], size: int, name: str
) -> web.StreamResponse:
    """Stream the open file `handle` (`size` bytes) as an attachment named `name`, a
    chunk at a time off the event loop; closes it. Size and bytes come from one open
    file: a retry or an upload that replaces the file meanwhile (a rename) does not mix
    two versions."""
    try:
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: "application/octet-stream",
                hdrs.CONTENT_DISPOSITION: content_disposition(name),
            }
        )
        response.content_length = size
        await response.prepare(request)
        if request.method == hdrs.METH_HEAD:
            return response
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            # The client left: nothing to answer, and not the gateway's error.
            log.info("download of %s stopped: the client disconnected", name)
        return response
    finally:
        await asyncio.to_thread(handle.close)


async def download_file(request: web.Request) -> web.StreamResponse:
    file, handle, size = await _open_requested(request)
    return await send_file(request, handle, size, file.name)


def add_routes(app: web.Application, prefix: str) -> None:
    # Three and four segments under /executions: no route of executions_api (two, or
    # `/{id}/<command>` POSTs) nor of webhooks_api (five) has this shape.
    app.router.add_get(prefix + "/executions/{id}/file", download_file)
    app.router.add_get(prefix + "/executions/{id}/file/metas", file_metas)
