"""Kestra's core storage tasks on headrace's file storage: `storage.write`
(`io.kestra.plugin.core.storage.Write`), `storage.size` (`…Size`) and `storage.concat`
(`…Concat`), with Kestra's property and output names. Files are read from the task's
own namespace only, as `inputFiles` reads them."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from pydantic import BaseModel, Field

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.stored_results import storage_of
from headrace.storage import StorageError

_COPY_BYTES = 1024 * 1024


class WriteProperties(ConnectorProperties):
    content: str = Field(description="The text to store (UTF-8).")
    extension: str | None = Field(
        default=None, description="The file's extension, e.g. `.txt` (Kestra's `extension`)."
    )


class UriOutputs(BaseModel):
    uri: str = Field(description="The stored file's URI (`headrace:///…`).")


class StorageWrite:
    """Stores `content` as a file; its URI is the output `uri`."""

    Properties = WriteProperties
    Outputs = UriOutputs
    aliases = ("io.kestra.plugin.core.storage.Write",)
    uses_workdir = False

    async def run(self, properties: WriteProperties, context: TaskContext) -> dict[str, Any]:
        files = storage_of(context, "storage.write")
        name = "content" + _extension(properties.extension)
        data = context.mask(properties.content).encode()

        def write() -> None:
            with files.writer(name) as file:
                file.write(data)

        await asyncio.to_thread(write)
        return {"uri": files.uri(name)}


class SizeProperties(ConnectorProperties):
    uri: str = Field(description="The stored file's URI.")


class SizeOutputs(BaseModel):
    size: int = Field(description="The file's size in bytes.")


class StorageSize:
    """The size in bytes of a stored file of the flow's namespace (output `size`)."""

    Properties = SizeProperties
    Outputs = SizeOutputs
    aliases = ("io.kestra.plugin.core.storage.Size", "io.kestra.core.tasks.storages.Size")
    uses_workdir = False

    async def run(self, properties: SizeProperties, context: TaskContext) -> dict[str, Any]:
        files = storage_of(context, "storage.size")

        def size() -> int:
            with _opened(files, properties.uri) as file:
                return file.seek(0, 2)

        return {"size": await asyncio.to_thread(size)}


class ConcatProperties(ConnectorProperties):
    files: list[str] = Field(min_length=1, description="URIs of the files, in order.")
    separator: str | None = Field(
        default=None, description="Text written between two files (none by default)."
    )
    extension: str = Field(default=".tmp", description="The result's extension (Kestra's).")


class StorageConcat:
    """Joins stored files, in order, into one (output `uri`)."""

    Properties = ConcatProperties
    Outputs = UriOutputs
    aliases = ("io.kestra.plugin.core.storage.Concat", "io.kestra.core.tasks.storages.Concat")
    uses_workdir = False

    async def run(self, properties: ConcatProperties, context: TaskContext) -> dict[str, Any]:
        files = storage_of(context, "storage.concat")
        name = "concat" + _extension(properties.extension)
        separator = (properties.separator or "").encode()

        def concat() -> None:
            with files.writer(name) as out:
                for i, uri in enumerate(properties.files):
                    if i and separator:
                        out.write(separator)
                    with _opened(files, uri) as source:
                        shutil.copyfileobj(source, out, _COPY_BYTES)

        await asyncio.to_thread(concat)
        return {"uri": files.uri(name)}


def _extension(extension: str | None) -> str:
    if not extension:
        return ""
    extension = extension if extension.startswith(".") else f".{extension}"
    if "/" in extension or "\\" in extension or extension in (".", ".."):
        raise TaskFailed(f"extension {extension!r} is not a file extension, e.g. .csv")
    return extension


def _opened(files: Any, uri: str) -> Any:
    try:
        return files.open(uri)
    except StorageError as exc:
        raise TaskFailed(str(exc)) from None
