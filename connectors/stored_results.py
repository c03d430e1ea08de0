"""Results too large for outputs, written to the file storage as JSON Lines.

`postgres.query` with `fetchType: STORE` and `kafka.consume` with `store: true` write
their rows or messages here, one JSON value per line, and output the file's URI instead
of the values. The file is streamed: lines are gathered into chunks of `CHUNK_BYTES`,
each written off the event loop, so a result of any size takes the memory of one chunk.
The file becomes its URI only when the block writing it ends without error (the
storage's temporary file, renamed): a failed or killed task leaves no file behind.

Why JSON Lines where Kestra writes Ion: every language reads it with its standard library,
a line at a time (`for line in file: json.loads(line)`), `jq` and DuckDB read it as it
is, and each line is the very value the inline form gives (a row of FETCH, a message
of `messages`), so a flow can switch between the two without changing what it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

import orjson

from headrace.connectors.base import TaskContext, TaskFailed, no_storage
from headrace.storage import TaskFiles

CHUNK_BYTES = 1024 * 1024


def storage_of(context: TaskContext, what: str) -> TaskFiles:
    """The task run's file storage; TaskFailed saying `what` needs it when there is none."""
    if context.files is None:
        raise no_storage(f"{what} writes its result to a file")
    return context.files


def json_line(value: Any, where: str) -> bytes:
    """`value` as one line of JSON (without its line break); TaskFailed naming `where`
    when it is no JSON data."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        pass
    # orjson stops at 64-bit integers; JSON has no such bound, and numeric columns or
    # decoded messages may hold larger ones.
    try:
        return json.dumps(
            value, allow_nan=False, ensure_ascii=False, separators=(",", ":")
        ).encode()
    except (TypeError, ValueError) as exc:
        raise TaskFailed(f"{where} is not JSON data: {exc}") from None


class JsonLines:
    """A JSON Lines file being written: `add` a line at a time; `uri` is where it ends up."""

    def __init__(self, file: IO[bytes], uri: str, mask: Callable[[str], str]) -> None:
        self.uri = uri
        self.count = 0  # lines added
        self._file = file
        self._mask = mask
        self._chunk = bytearray()

    async def add(self, line: bytes) -> None:
        """Append one line (JSON text without its line break)."""
        self._chunk += line
        self._chunk += b"\n"
        self.count += 1
        if len(self._chunk) >= CHUNK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        chunk, self._chunk = bytes(self._chunk), bytearray()
        if not chunk:
            return
        # Secrets are masked here as in outputs: a reader may download the file. A chunk
        # ends with a line, so no secret is split between two.
        chunk = self._mask(chunk.decode("utf-8", errors="replace")).encode()
        try:
            await asyncio.to_thread(self._file.write, chunk)
        except OSError as exc:
            raise TaskFailed(
                f"could not write {self.uri} to the file storage: {exc.strerror or exc}"
            ) from None


@contextlib.asynccontextmanager
async def json_lines_file(
    files: TaskFiles, name: str, mask: Callable[[str], str]
) -> AsyncIterator[JsonLines]:
    """A JSON Lines file that becomes `files.uri(name)` when the block ends without
    error; on an error, a kill included, its temporary file is removed. `mask`: the
    task's secret masking (`TaskContext.mask`), applied to every line."""
    uri = files.uri(name)
    writer = files.writer(name)
    try:
        # A folder and an empty temporary file: quick enough for the event loop, and
        # done here no kill can come between creating the file and owning it.
        file = writer.__enter__()
    except OSError as exc:
        raise TaskFailed(
            f"could not write {uri} to the file storage: {exc.strerror or exc}"
        ) from None
    lines = JsonLines(file, uri, mask)
    try:
        yield lines
        await lines.flush()
    except BaseException:
        writer.__exit__(*sys.exc_info())  # removes the temporary file; no thread, no await
        raise
    try:
        await asyncio.to_thread(writer.__exit__, None, None, None)  # close, rename into place
    except OSError as exc:
        raise TaskFailed(
            f"could not write {uri} to the file storage: {exc.strerror or exc}"
        ) from None
