"""Namespace files through a real gateway (on the session's broker, database and file
storage) and through the CLI as users run it: `/api/v1/namespaces/{namespace}/files`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from headrace.config import Settings
from headrace.local import LocalStack
from headrace.namespace_storage import (
    namespace_entry,
    namespace_files,
    open_namespace_file,
    put_namespace_file,
)
from headrace.passwords import token_digest
from headrace.services.gateway.namespace_files_api import MAX_FILE_BYTES
from headrace.storage import NAMESPACE_FILES, Storage
from tests.integration.stacks import in_process_gateway, run_cli

READER_TOKEN = "reader-token-" + uuid.uuid4().hex
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def files_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's settings plus a reader token."""
    path = tmp_path_factory.mktemp("nsfiles") / "credentials.toml"
    path.write_text(
        f'[[tokens]]\nname = "dashboard"\nrole = "reader"\nsha256 = "{token_digest(READER_TOKEN)}"\n'
    )
    return dataclasses.replace(settings, credentials_file=str(path))


@pytest.fixture(scope="module")
async def base_url(files_settings: Settings) -> AsyncIterator[str]:
    async with in_process_gateway(files_settings) as url:
        yield url


@pytest.fixture
async def http(base_url: str, auth_headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url, headers=auth_headers) as session:
        yield session


@pytest.fixture
def storage(settings: Settings) -> Storage:
    """The storage the gateway writes: the session's."""
    return Storage(settings.storage_path())


@pytest.fixture
def namespace() -> str:
    return f"test.nsfiles{uuid.uuid4().hex[:8]}"


def route(namespace: str, directory: bool = False) -> str:
    return f"/api/v1/namespaces/{namespace}/files" + ("/directory" if directory else "")


async def answer(response: aiohttp.ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json", await response.text()
    return response.status, await response.json()


async def upload(http: aiohttp.ClientSession, namespace: str, path: str, data: Any) -> Any:
    async with http.post(route(namespace), params={"path": path}, data=data) as response:
        status, body = await answer(response)
    assert status == 200, body
    return body


def form(content: bytes | io.IOBase, field: str = "fileContent") -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field(field, content, filename="upload.bin")
    return data


async def test_upload_list_download_delete_round_trip(
    http: aiohttp.ClientSession, namespace: str, storage: Storage
) -> None:
    stored = await upload(http, namespace, "/sql/load.sql", b"select 1")  # a raw body
    assert stored["fileName"] == "sql/load.sql" and stored["size"] == 8
    assert stored["type"] == "File" and isinstance(stored["lastModifiedTime"], int)
    await upload(http, namespace, "sql/deep/more.sql", form(b"select 2"))  # Kestra's form
    await upload(http, namespace, "main.py", form(b"print(1)\n"))

    # Kestra's listing: one folder's own entries, names only.
    async with http.get(route(namespace, True), params={"path": "sql"}) as response:
        status, entries = await answer(response)
    assert status == 200
    assert [(e["fileName"], e["type"], e["size"]) for e in entries] == [
        ("deep", "Directory", 0),
        ("load.sql", "File", 8),
    ]
    async with http.get(route(namespace, True)) as response:  # no path: the root
        assert [e["fileName"] for e in (await answer(response))[1]] == ["main.py", "sql"]
    # The whole tree, flattened, with digests: what `sync` compares.
    params = {"recursive": "true", "sha256": "true"}
    async with http.get(route(namespace, True), params=params) as response:
        tree = {e["fileName"]: e.get("sha256") for e in (await answer(response))[1]}
    assert tree == {
        "main.py": hashlib.sha256(b"print(1)\n").hexdigest(),
        "sql": None,
        "sql/deep": None,
        "sql/deep/more.sql": hashlib.sha256(b"select 2").hexdigest(),
        "sql/load.sql": hashlib.sha256(b"select 1").hexdigest(),
    }

    async with http.get(route(namespace), params={"path": "sql/deep/more.sql"}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert 'filename="more.sql"' in response.headers["Content-Disposition"]
        assert await response.read() == b"select 2"
    # What the workers read: the same file, in the shared storage.
    with open_namespace_file(storage, namespace, "sql/deep/more.sql") as file:
        assert file.read() == b"select 2"

    await upload(http, namespace, "sql/load.sql", b"select 10")  # replaced
    async with http.get(route(namespace), params={"path": "sql/load.sql"}) as response:
        assert await response.read() == b"select 10"

    async with http.delete(route(namespace), params={"path": "main.py"}) as response:
        assert await answer(response) == (
            200,
            {"path": "main.py", "type": "File", "deletedFiles": 1},
        )
    async with http.delete(route(namespace), params={"path": "/sql"}) as response:
        assert await answer(response) == (
            200,
            {"path": "sql", "type": "Directory", "deletedFiles": 2},
        )
    async with http.get(route(namespace), params={"path": "sql/load.sql"}) as response:
        status, body = await answer(response)
    assert status == 404 and "no file 'sql/load.sql'" in body["message"]
    async with http.delete(route(namespace), params={"path": "sql"}) as response:
        assert (await answer(response))[0] == 404
    assert namespace_files(storage, namespace) == []


async def test_nested_namespaces_have_their_own_files(
    http: aiohttp.ClientSession, namespace: str
) -> None:
    await upload(http, namespace, "parent.sql", b"p")
    await upload(http, f"{namespace}.team", "child.sql", b"c")
    for name, expected in ((namespace, ["parent.sql"]), (f"{namespace}.team", ["child.sql"])):
        async with http.get(route(name, True)) as response:
            assert [e["fileName"] for e in (await answer(response))[1]] == expected
    async with http.get(route(namespace), params={"path": "child.sql"}) as response:
        assert (await answer(response))[0] == 404


async def test_a_reader_may_read_and_not_write(
    http: aiohttp.ClientSession, namespace: str, storage: Storage
) -> None:
    await upload(http, namespace, "a.sql", b"mine")
    reader = {"Authorization": f"Bearer {READER_TOKEN}"}
    async with http.get(route(namespace, True), headers=reader) as response:
        assert (await answer(response))[0] == 200
    async with http.get(route(namespace), params={"path": "a.sql"}, headers=reader) as response:
        assert await response.read() == b"mine"
    async with http.post(
        route(namespace), params={"path": "a.sql"}, data=b"theirs", headers=reader
    ) as response:
        status, body = await answer(response)
    assert status == 403 and "needs the writer role" in body["message"]
    async with http.delete(route(namespace), params={"path": "a.sql"}, headers=reader) as response:
        assert (await answer(response))[0] == 403
    with open_namespace_file(storage, namespace, "a.sql") as file:
        assert file.read() == b"mine"
    # No credentials at all: 401.
    async with (
        aiohttp.ClientSession(http._base_url) as anonymous,
        anonymous.get(route(namespace, True)) as response,
    ):
        assert (await answer(response))[0] == 401


async def test_bad_paths_and_namespaces_are_refused_with_the_reason(
    http: aiohttp.ClientSession, namespace: str, storage: Storage
) -> None:
    cases = [
        ("POST", namespace, "../escape.sql", "leads out"),
        ("POST", namespace, "sql/../../escape.sql", "leads out"),
        ("GET", namespace, "a/../../../etc/passwd", "leads out"),
        ("DELETE", namespace, "..", "leads out"),
        ("POST", namespace, "sql/.writing-0123", "reserved"),
        ("POST", namespace, "sql/", "names a folder"),
        ("DELETE", namespace, "/", "`path` is required"),
        ("GET", namespace, "", "`path` is required"),
        ("GET", "Not_A_Namespace", "a.sql", "is not a namespace"),
    ]
    for method, name, path, reason in cases:
        async with http.request(method, route(name), params={"path": path}, data=b"x") as response:
            status, body = await answer(response)
        assert status == 400 and reason in body["message"], (method, path, body)
    async with http.get(route(namespace), params={"path": "a\0b"}) as response:
        status, body = await answer(response)
    assert status == 400 and "NUL" in body["message"]
    async with http.get(route(namespace, True), params={"path": "../.."}) as response:
        assert (await answer(response))[0] == 400
    assert namespace_files(storage, namespace) == []
    assert not (storage.root / "escape.sql").exists()
    assert not (storage.root / namespace / "escape.sql").exists()


async def test_missing_and_mismatched_paths(http: aiohttp.ClientSession, namespace: str) -> None:
    async with http.get(route(namespace, True)) as response:
        assert await answer(response) == (200, [])  # no file yet: an empty listing
    async with http.get(route(namespace, True), params={"path": "nope"}) as response:
        assert (await answer(response))[0] == 404
    async with http.get(route(namespace), params={"path": "nope.sql"}) as response:
        assert (await answer(response))[0] == 404
    await upload(http, namespace, "sql/a.sql", b"1")
    async with http.get(route(namespace), params={"path": "sql"}) as response:
        status, body = await answer(response)
    assert status == 409 and "is a folder" in body["message"]
    async with http.post(route(namespace), params={"path": "sql/a.sql/b"}, data=b"x") as response:
        status, body = await answer(response)
    assert status == 409 and "is a file, not a folder" in body["message"]
    async with http.post(route(namespace), params={"path": "x.sql"}, data=form(b"1", "other")) as r:
        status, body = await answer(r)
    assert status == 400 and "`fileContent`" in body["message"]


async def test_files_over_the_limit_are_refused_with_413_and_not_stored(
    http: aiohttp.ClientSession, namespace: str, storage: Storage, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk, no memory

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        with big.open("rb") as source:
            while chunk := source.read(MiB):
                yield chunk

    with big.open("rb") as raw, big.open("rb") as multipart:
        bodies = {"announced": raw, "chunked": chunked(), "multipart": form(multipart)}
        for kind, data in bodies.items():
            async with http.post(
                route(namespace), params={"path": f"{kind}.bin"}, data=data
            ) as response:
                status, body = await answer(response)
            assert status == 413, (kind, body)
            assert f"at most {MAX_FILE_BYTES // MiB} MiB" in body["message"], kind
    assert namespace_files(storage, namespace) == []
    folder = storage.root / namespace / NAMESPACE_FILES
    assert not folder.exists() or list(folder.iterdir()) == []  # no temporary file left


def gateway_at(url: str) -> LocalStack:
    """What `run_cli` reads of a stack, its URL, for the gateway of this module."""

    @dataclasses.dataclass
    class GatewayAt:
        url: str

    return cast(LocalStack, GatewayAt(url))


async def cli(base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    # In a thread: the gateway runs in this event loop.
    done = await asyncio.to_thread(run_cli, gateway_at(base_url), *args, timeout_s=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done


async def test_the_cli_uploads_lists_downloads_syncs_and_deletes(
    base_url: str, namespace: str, storage: Storage, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"  # a Git checkout holding a dbt project
    project = repo / "dbt"
    (project / "models").mkdir(parents=True)
    (project / "models" / "orders.sql").write_text("select 1")
    (project / "dbt_project.yml").write_text("name: shop\n")
    (repo / ".git").mkdir()
    (repo / ".git" / "HEAD").write_text("ref: main")
    (project / ".env").write_text("PASSWORD=x")
    (project / "elsewhere").symlink_to(tmp_path)  # would upload what is outside

    uploaded = await cli(
        base_url, "namespace", "files", "upload", str(project), namespace, "--to", "dbt"
    )
    assert uploaded.returncode == 0, uploaded.stderr
    assert "uploaded  dbt/models/orders.sql  (8 bytes)" in uploaded.stdout
    assert "skipped   elsewhere (a symbolic link)" in uploaded.stdout
    assert "2 file(s) uploaded" in uploaded.stdout
    files = [e.path for e in namespace_files(storage, namespace) if e.kind == "file"]
    assert files == ["dbt/dbt_project.yml", "dbt/models/orders.sql"]

    listed = await cli(base_url, "namespace", "files", "list", namespace, "dbt")
    assert listed.returncode == 0, listed.stderr
    assert "dbt/models/orders.sql" in listed.stdout and "2 file(s)" in listed.stdout

    target = tmp_path / "orders.sql"
    got = await cli(
        base_url, "namespace", "files", "download", namespace, "dbt/models/orders.sql",
        "-o", str(target),
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert target.read_text() == "select 1"

    # GitOps: the checkout changes, and sync makes the namespace follow it.
    (project / "models" / "orders.sql").write_text("select 2")
    (project / "models" / "customers.sql").write_text("select 3")
    (project / "dbt_project.yml").unlink()
    # A folder the checkout lacks, and a hidden file sync leaves alone.
    await asyncio.to_thread(put_namespace_file, storage, namespace, "old/x.sql", io.BytesIO(b"o"))
    await asyncio.to_thread(put_namespace_file, storage, namespace, ".keep", io.BytesIO(b""))

    sync = ("namespace", "files", "sync", str(repo), namespace, "--prune")
    plan = await cli(base_url, *sync, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    models = project / "models"
    assert f"create    {namespace}/dbt/models/customers.sql  ({models / 'customers.sql'})" in lines
    assert f"update    {namespace}/dbt/models/orders.sql  ({models / 'orders.sql'})" in lines
    assert f"delete    {namespace}/dbt/dbt_project.yml" in lines
    assert f"delete    {namespace}/old/" in lines
    assert not any(".keep" in line or ".git" in line for line in lines)
    assert lines[-1] == "dry run: nothing applied"
    assert namespace_entry(storage, namespace, "old/x.sql") is not None  # nothing changed

    synced = await cli(base_url, *sync)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.splitlines()[-1] == "2 uploaded, 0 unchanged, 2 file(s) deleted"
    files = [e.path for e in namespace_files(storage, namespace) if e.kind == "file"]
    assert files == [".keep", "dbt/models/customers.sql", "dbt/models/orders.sql"]
    with open_namespace_file(storage, namespace, "dbt/models/orders.sql") as file:
        assert file.read() == b"select 2"

    again = await cli(base_url, *sync)
    assert again.stdout.splitlines()[-1] == "0 uploaded, 2 unchanged, 0 file(s) deleted"

    deleted = await cli(base_url, "namespace", "files", "delete", namespace, "dbt")
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted folder dbt/ (2 file(s))" in deleted.stdout
    missing = await cli(base_url, "namespace", "files", "delete", namespace, "dbt")
    assert missing.returncode == 1 and "no file or folder 'dbt'" in missing.stderr
