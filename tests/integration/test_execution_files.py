"""Downloading the files tasks stored, through the real services: the gateway's
`/executions/{id}/file` routes and `headrace execution file`, and the workers' sweep of
old executions' files.

Files are written into the stack's storage by the test itself (`Storage.writer`, as a
task's `context.files` does), under the URI of a task run of a real execution.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError, Unauthorized
from headrace.config import Settings
from headrace.file_download import PROGRESS_MIN_BYTES
from headrace.local import LocalStack
from headrace.storage import Storage, make_uri
from tests.integration.stacks import ROOT, put_flows, run_cli, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = f"tests.files{uuid.uuid4().hex[:6]}"
FLOW = f"""\
id: export
namespace: {NAMESPACE}
tasks:
  - id: extract
    type: log
    message: extracted
"""
DATA = b"id,name\n1,ada\n2,\xff\xfe binary too\n"
# Planted before the stack starts, last changed long before the retention (7 days).
ANCIENT_S = 30 * 24 * 3600


def ancient_execution(storage: Storage) -> Path:
    uri = make_uri(NAMESPACE, "export", "executions", "ancient", "tasks", "t", "run", "old.csv")
    with storage.writer(uri) as out:
        out.write(b"old")
    path = storage.path(uri)
    folder = path.parents[3]
    for changed in (path, *path.parents[: len(path.parents) - len(folder.parents)]):
        os.utime(changed, (time.time() - ANCIENT_S,) * 2)
    return folder


@pytest.fixture(scope="module")
def storage(settings: Settings) -> Storage:
    assert settings.storage_dir  # the session's own (tests/conftest.py)
    return Storage(Path(settings.storage_dir))


@pytest.fixture(scope="module")
def ancient(storage: Storage) -> Path:
    return ancient_execution(storage)


@pytest.fixture(scope="module")
def stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, ancient: Path
) -> Iterator[LocalStack]:
    services = ("indexer", "executor", "worker", "gateway")  # no trigger here
    with running_stack(settings, tmp_path_factory, "files-logs", services) as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    client = ApiClient(stack.url, timeout_s=60)
    put_flows(client, NAMESPACE, {"export": FLOW})
    return client


def run_export(api: ApiClient) -> dict:
    execution = api.request(
        "POST",
        f"/executions/{NAMESPACE}/export",
        params={"wait": "true", "timeout": "60"},
        json_body={},
        timeout_s=70,
    )
    assert execution["state"]["current"] == "SUCCESS", execution
    return execution


def store(storage: Storage, execution: dict, name: str, data: bytes) -> str:
    """Write `data` as the file `name` of the execution's task run: its URI."""
    run = execution["taskRunList"][0]
    uri = storage.task_file_uri(NAMESPACE, "export", execution["id"], "extract", run["id"], name)
    with storage.writer(uri) as out:
        out.write(data)
    return uri


@pytest.fixture(scope="module")
def stored(api: ApiClient, storage: Storage) -> tuple[str, str]:
    """An execution of this module and the URI of the file its task stored."""
    execution = run_export(api)
    return execution["id"], store(storage, execution, "rows.csv", DATA)


def get(
    stack: LocalStack, route: str, token: str | None, method: str = "GET", **query: str
) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP call: status, headers and body, whatever the status."""
    url = f"{stack.url}/api/v1{route}?{urllib.parse.urlencode(query)}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def cli(stack: LocalStack, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    """`headrace ARGS…` as `run_cli` runs it, with bytes out and a working folder."""
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        cwd=cwd,
        env={**os.environ, "HEADRACE_URL": stack.url},
        capture_output=True,
        timeout=120,
    )


def test_the_file_downloads_as_an_attachment(
    stack: LocalStack, stored: tuple[str, str], api_token: str
) -> None:
    execution_id, uri = stored
    status, headers, body = get(stack, f"/executions/{execution_id}/file", api_token, path=uri)
    assert status == 200, body
    assert body == DATA
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith('attachment; filename="rows.csv"')
    assert headers["Content-Length"] == str(len(DATA))
    status, headers, body = get(
        stack, f"/executions/{execution_id}/file", api_token, method="HEAD", path=uri
    )
    assert (status, headers["Content-Length"], body) == (200, str(len(DATA)), b"")


def test_metas_give_name_and_size(api: ApiClient, stored: tuple[str, str]) -> None:
    execution_id, uri = stored
    metas = api.request("GET", f"/executions/{execution_id}/file/metas", params={"path": uri})
    assert metas == {"uri": uri, "name": "rows.csv", "size": len(DATA)}


def test_a_file_of_another_execution_is_not_found(
    api: ApiClient, storage: Storage, stored: tuple[str, str]
) -> None:
    execution_id, _ = stored
    other = run_export(api)
    theirs = store(storage, other, "theirs.csv", b"not yours")
    for route in ("file", "file/metas"):
        with pytest.raises(ApiError) as refused:
            api.request("GET", f"/executions/{execution_id}/{route}", params={"path": theirs})
        assert refused.value.status == 404
        assert str(refused.value) == f"{theirs} is not a file of execution {execution_id}"
    # The same URI through its own execution is served: the 404 was the boundary.
    assert api.request("GET", f"/executions/{other['id']}/file/metas", params={"path": theirs})


def test_a_missing_file_is_not_found(api: ApiClient, stored: tuple[str, str]) -> None:
    execution_id, uri = stored
    # A name nothing wrote, and the task run's folder (not a file).
    for missing in (uri.replace("rows.csv", "missing.csv"), uri.removesuffix("/rows.csv")):
        with pytest.raises(ApiError) as refused:
            api.request("GET", f"/executions/{execution_id}/file", params={"path": missing})
        assert refused.value.status == 404
        assert str(refused.value) == f"{missing}: no such file in storage"


def test_an_execution_the_index_does_not_know_has_no_files(
    api: ApiClient, storage: Storage, stored: tuple[str, str]
) -> None:
    _, uri = stored
    ghost = "ghost" + uuid.uuid4().hex[:10]
    ghost_uri = uri.replace(stored[0], ghost)
    with storage.writer(ghost_uri) as out:
        out.write(b"boo")
    with pytest.raises(ApiError) as refused:
        api.request("GET", f"/executions/{ghost}/file", params={"path": ghost_uri})
    assert (refused.value.status, str(refused.value)) == (404, f"execution {ghost} not found")


def test_namespace_files_are_not_execution_files(
    api: ApiClient, storage: Storage, stored: tuple[str, str]
) -> None:
    execution_id, _ = stored
    # Shaped like a task file of this execution, but under the namespace's own files.
    uri = make_uri(
        NAMESPACE, "_files", "executions", execution_id, "tasks", "t", "run", "script.sql"
    )
    with storage.writer(uri) as out:
        out.write(b"select 1")
    with pytest.raises(ApiError) as refused:
        api.request("GET", f"/executions/{execution_id}/file", params={"path": uri})
    assert refused.value.status == 404


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("headrace:///../x", "'headrace:///../x' is not a storage file: bad path segment '..'"),
        ("file:///etc/passwd", "'file:///etc/passwd' is not a storage URI"),
        (f"headrace:///{NAMESPACE}/%2e%2e/%2e%2e/etc/passwd", "bad path segment '..'"),
        ("", "the query parameter `path` is required"),
    ],
)
def test_a_path_that_is_no_storage_uri_is_a_bad_request(
    stack: LocalStack, stored: tuple[str, str], api_token: str, path: str, message: str
) -> None:
    execution_id, _ = stored
    for route in ("file", "file/metas"):
        status, headers, body = get(
            stack, f"/executions/{execution_id}/{route}", api_token, path=path
        )
        assert status == 400
        assert headers["Content-Type"].startswith("application/json")
        assert message in json.loads(body)["message"]


def test_downloads_need_credentials(stack: LocalStack, stored: tuple[str, str]) -> None:
    execution_id, uri = stored
    for route in ("file", "file/metas"):
        status, headers, body = get(stack, f"/executions/{execution_id}/{route}", None, path=uri)
        assert status == 401
        assert "WWW-Authenticate" in headers
        assert DATA not in body
    with pytest.raises(Unauthorized):
        ApiClient(stack.url, token="wrong").request(
            "GET", f"/executions/{execution_id}/file/metas", params={"path": uri}
        )


def test_the_cli_writes_the_file_and_keeps_an_existing_one(
    stack: LocalStack, storage: Storage, stored: tuple[str, str], tmp_path: Path
) -> None:
    execution_id, uri = stored
    saved = cli(stack, "execution", "file", execution_id, uri, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "rows.csv").read_bytes() == DATA  # its name, in the current folder
    assert saved.stdout.decode().strip() == f"wrote rows.csv ({len(DATA)} bytes)"

    refused = cli(stack, "execution", "file", execution_id, uri, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.decode() == "error: rows.csv exists: pass --force to overwrite it\n"

    with storage.writer(uri) as out:  # a retried attempt replaced the file
        out.write(b"second version")
    folder = tmp_path / "out"
    folder.mkdir()
    into_folder = run_cli(stack, "execution", "file", execution_id, uri, "-o", str(folder))
    assert into_folder.returncode == 0, into_folder.stderr
    assert (folder / "rows.csv").read_bytes() == b"second version"
    forced = cli(stack, "execution", "file", execution_id, uri, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "rows.csv").read_bytes() == b"second version"
    assert sorted(os.listdir(tmp_path)) == ["out", "rows.csv"]  # no partial file left
    with storage.writer(uri) as out:
        out.write(DATA)


def test_the_cli_writes_to_stdout(
    stack: LocalStack, stored: tuple[str, str], tmp_path: Path
) -> None:
    execution_id, uri = stored
    piped = cli(stack, "execution", "file", execution_id, uri, "-o", "-", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == DATA
    assert piped.stderr == b""
    assert os.listdir(tmp_path) == []


def test_the_cli_says_what_is_wrong_in_one_line(
    stack: LocalStack, stored: tuple[str, str], tmp_path: Path
) -> None:
    execution_id, uri = stored
    for bad, message in (
        (uri.replace("rows.csv", "nope.csv"), "no such file in storage"),
        ("headrace:///../x", "is not a storage file"),
        (uri.replace(execution_id, "someone-else"), f"is not a file of execution {execution_id}"),
    ):
        result = run_cli(stack, "execution", "file", execution_id, bad, "-o", str(tmp_path / "x"))
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_a_big_file_streams_with_its_progress(
    stack: LocalStack, api: ApiClient, storage: Storage, tmp_path: Path
) -> None:
    execution = run_export(api)
    data = os.urandom(PROGRESS_MIN_BYTES + 1024 * 1024 + 3)
    uri = store(storage, execution, "big.bin", data)
    target = tmp_path / "big.bin"
    result = run_cli(stack, "execution", "file", execution["id"], uri, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert f"{PROGRESS_MIN_BYTES:,} of {len(data):,} bytes" in result.stderr
    assert f"{len(data):,} of {len(data):,} bytes" in result.stderr


def test_workers_sweep_the_files_of_old_executions(
    stack: LocalStack, ancient: Path, stored: tuple[str, str], storage: Storage
) -> None:
    # Planted a month old before the stack started: its worker sweeps at start.
    wait_until(lambda: not ancient.exists(), what="the worker to sweep a month-old execution")
    _, uri = stored
    assert storage.path(uri).read_bytes() == DATA  # a fresh one stays
