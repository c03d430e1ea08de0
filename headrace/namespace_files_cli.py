"""`headrace namespace files …`: a namespace's own files, from a terminal or a CI job.

`upload` sends a file or a folder, `list`, `download` and `delete` do what they say, and
`sync` makes the namespace hold what a folder holds (GitOps: a dbt project kept in Git,
synced at every merge): files that differ are uploaded, and with `--prune` the files the
folder no longer has are deleted. Like `flow apply`, `sync` prints its plan first, and
`--dry-run` stops there.

A folder's hidden entries (`.git`, `.venv`, `.env`) and symbolic links are skipped: a
checkout's metadata and secrets stay home, and a link cannot upload what lies outside
the folder. `sync` compares files by SHA-256 (the server's listing gives its files'),
so only what changed travels. `--prune` leaves hidden remote files alone (sync cannot
have uploaded them), unless they are in a folder the local folder no longer has.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from headrace import file_download
from headrace.api_client import ApiClient
from headrace.errors import HeadraceError

Echo = Callable[[str], None]
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A file to upload: where it goes among the namespace's files, where it is here."""

    path: str  # `/`-separated, relative to the namespace's root
    source: Path


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def _join(folder: str, path: str) -> str:
    folder = folder.strip("/")
    return f"{folder}/{path}" if folder else path


def local_files(source: Path, to: str = "", echo: Echo | None = None) -> list[LocalFile]:
    """The files `source` holds (itself, when it is a file), placed under the namespace's
    folder `to`; in a folder, hidden entries and links are skipped (said through `echo`)."""
    if not source.is_dir():
        if not source.is_file():
            raise HeadraceError(f"{source}: not a file or a folder")
        return [LocalFile(_join(to, source.name), source)]
    found: list[LocalFile] = []
    # os.walk does not enter links to folders; they, and links to files, are skipped.
    for directory, folders, files in os.walk(source):
        here = Path(directory)
        for name in list(folders):
            if name.startswith(".") or (here / name).is_symlink():
                folders.remove(name)
                if not name.startswith(".") and echo is not None:
                    echo(f"skipped   {(here / name).relative_to(source)} (a symbolic link)")
        for name in files:
            full = here / name
            if name.startswith("."):
                continue
            relative = full.relative_to(source).as_posix()
            if full.is_symlink() or not full.is_file():
                if echo is not None:
                    echo(f"skipped   {relative} (a symbolic link or not a regular file)")
                continue
            found.append(LocalFile(_join(to, relative), full))
    return sorted(found, key=lambda file: file.path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _send(api: ApiClient, namespace: str, file: LocalFile) -> int:
    """Upload one file; its size as the server stored it."""
    try:
        data = file.source.open("rb")
    except OSError as exc:
        raise HeadraceError(f"cannot read {file.source}: {exc.strerror or exc}") from None
    with data:
        answer = api.upload_namespace_file(namespace, file.path, data)
    return int(answer["size"])


def listing(
    api: ApiClient, namespace: str, path: str = "", *, sha256: bool = False
) -> list[dict[str, Any]]:
    """Every file and folder below `path` ("": the namespace's root), flattened."""
    return api.list_namespace_files(namespace, path, recursive=True, sha256=sha256)


def upload(api: ApiClient, source: Path, namespace: str, to: str, echo: Echo) -> None:
    files = local_files(source, to, echo)
    if not files:
        raise HeadraceError(f"{source}: no file to upload (hidden files and links are skipped)")
    total = 0
    for file in files:
        size = _send(api, namespace, file)
        total += size
        echo(f"uploaded  {file.path}  ({size:,} bytes)")
    echo(f"{len(files)} file(s) uploaded to namespace {namespace} ({total:,} bytes)")


def list_files(api: ApiClient, namespace: str, path: str, echo: Echo) -> None:
    files = [entry for entry in listing(api, namespace, path) if entry["type"] == "File"]
    for entry in files:
        modified = datetime.fromtimestamp(entry["lastModifiedTime"] / 1000, UTC)
        echo(
            f"{entry['size']:>12,}  {modified:%Y-%m-%dT%H:%M:%SZ}  {_join(path, entry['fileName'])}"
        )
    echo(f"{len(files)} file(s)")


def download(
    api: ApiClient, namespace: str, path: str, output: str | None, force: bool, echo: Echo
) -> None:
    name = PurePosixPath(path).name or path
    written = file_download.download(
        lambda: api.download_namespace_file(namespace, path), name, output, force
    )
    if written is not None:
        echo(f"wrote {written[0]} ({written[1]:,} bytes)")


def delete(api: ApiClient, namespace: str, path: str, echo: Echo) -> None:
    answer = api.delete_namespace_file(namespace, path)
    if answer["type"] == "Directory":
        echo(f"deleted folder {answer['path']}/ ({answer['deletedFiles']} file(s))")
    else:
        echo(f"deleted {answer['path']}")


@dataclass(frozen=True, slots=True)
class SyncPlan:
    uploads: list[tuple[str, LocalFile]]  # (create | update | unchanged, file)
    deletes: list[tuple[str, bool]]  # (path, is a folder): folders cover what they hold


def plan_sync(local: list[LocalFile], remote: list[dict[str, Any]], prune: bool) -> SyncPlan:
    """What makes the namespace's files those of `local`: the remote listing (flattened,
    with digests) compared to them."""
    remote_files = {e["fileName"]: e for e in remote if e["type"] == "File"}
    uploads = []
    for file in local:
        current = remote_files.get(file.path)
        if current is None:
            action = "create"
        elif current.get("sha256") == _sha256(file.source):
            action = "unchanged"
        else:
            action = "update"
        uploads.append((action, file))
    deletes: list[tuple[str, bool]] = []
    if prune:
        wanted = {file.path for file in local}
        folders = {str(parent) for file in local for parent in PurePosixPath(file.path).parents}
        for entry in sorted(remote, key=lambda e: e["fileName"]):
            path, is_folder = entry["fileName"], entry["type"] == "Directory"
            if _hidden(path) or any(path.startswith(f"{d}/") for d, f in deletes if f):
                continue
            if (path not in folders) if is_folder else (path not in wanted):
                deletes.append((path, is_folder))
    return SyncPlan(uploads, deletes)


def sync(
    api: ApiClient, folder: Path, namespace: str, *, prune: bool, dry_run: bool, echo: Echo
) -> None:
    local = local_files(folder, "", echo)
    if not local:  # with --prune, it would empty the namespace: a wrong folder, surely
        raise HeadraceError(f"{folder}: no file to sync (hidden files and links are skipped)")
    plan = plan_sync(local, listing(api, namespace, sha256=True), prune)
    for action, file in plan.uploads:
        echo(f"{action:<9} {namespace}/{file.path}  ({file.source})")
    for path, is_folder in plan.deletes:
        echo(f"{'delete':<9} {namespace}/{path}{'/' if is_folder else ''}")
    if dry_run:
        echo("dry run: nothing applied")
        return
    # Deletions first: a folder that became a file (or the other way round) is then
    # free for its upload.
    deleted = 0
    for path, is_folder in plan.deletes:
        answer = api.delete_namespace_file(namespace, path)
        deleted += int(answer["deletedFiles"])
        echo(f"deleted   {namespace}/{path}{'/' if is_folder else ''}")
    uploaded = 0
    for action, file in plan.uploads:
        if action == "unchanged":
            continue
        size = _send(api, namespace, file)
        uploaded += 1
        echo(f"uploaded  {namespace}/{file.path}  ({size:,} bytes)")
    unchanged = len(plan.uploads) - uploaded
    echo(f"{uploaded} uploaded, {unchanged} unchanged, {deleted} file(s) deleted")
