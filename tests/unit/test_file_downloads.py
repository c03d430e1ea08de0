"""Both ends of a storage file's download, on real folders: what the gateway agrees to
open (services/gateway/files_api.py) and how the CLI writes what it receives
(headrace/file_download.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from headrace.api_client import Download, ServerUnreachable
from headrace.file_download import (
    PROGRESS_MIN_BYTES,
    DownloadError,
    Progress,
    check_target,
    copy,
    save,
    target_path,
)
from headrace.services.gateway.files_api import content_disposition, open_stored
from headrace.storage import Storage, StorageError, stored_file

URI = "headrace:///ns/flow/executions/ex1/tasks/extract/run1/rows.csv"


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "storage")
    with storage.writer(URI) as out:
        out.write(b"a,b\n1,2\n")
    return storage


# --- the gateway's side -----------------------------------------------------------------


def test_a_stored_file_opens_with_its_size(storage: Storage) -> None:
    handle, size = open_stored(storage, stored_file(URI))
    with handle:
        assert (handle.read(), size) == (b"a,b\n1,2\n", 8)


def test_a_link_planted_in_the_storage_is_not_followed(storage: Storage, tmp_path: Path) -> None:
    # A task runs as the workers' user and may write links there: the gateway must not
    # serve what they point at (its own credentials, say).
    secret = tmp_path / "gateway-credentials"
    secret.write_text("token")
    link = storage.path(URI.replace("rows.csv", "link.csv"))
    link.symlink_to(secret)
    with pytest.raises(StorageError, match="no such file in storage"):
        open_stored(storage, stored_file(URI.replace("rows.csv", "link.csv")))
    # A linked folder on the way is refused too, not only the last component.
    (storage.root / "ns" / "flow" / "executions" / "ex2").symlink_to(storage.path(URI).parents[3])
    linked = URI.replace("/ex1/", "/ex2/")
    assert storage.path(linked).read_bytes() == b"a,b\n1,2\n"  # plain open follows it
    with pytest.raises(StorageError, match="no such file in storage"):
        open_stored(storage, stored_file(linked))


def test_only_regular_files_open(storage: Storage) -> None:
    fifo = URI.replace("rows.csv", "pipe")
    os.mkfifo(storage.path(fifo))  # would block a plain open until someone writes
    folder = URI.replace("/rows.csv", "")
    for uri in (fifo, folder, URI.replace("rows.csv", "missing.csv")):
        with pytest.raises(StorageError, match="no such file in storage"):
            open_stored(storage, stored_file(uri))


def test_a_storage_never_written_has_no_files(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file in storage"):
        open_stored(Storage(tmp_path / "none"), stored_file(URI))


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("rows.csv", "attachment; filename=\"rows.csv\"; filename*=UTF-8''rows.csv"),
        (
            "résumé.pdf",
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
        ),
        (
            'a"b\\c\r\nSet-Cookie: x',
            'attachment; filename="a_b_c__Set-Cookie: x"; '
            "filename*=UTF-8''a%22b%5Cc%0D%0ASet-Cookie%3A%20x",
        ),
    ],
)
def test_the_file_name_cannot_break_out_of_its_header(name: str, header: str) -> None:
    assert content_disposition(name) == header


# --- the CLI's side ---------------------------------------------------------------------


def body(data: bytes, size: int | None = -1, fail_after: int | None = None) -> Download:
    stream = io.BytesIO(data)

    def read(n: int) -> bytes:
        if fail_after is not None and stream.tell() >= fail_after:
            raise ServerUnreachable("the server went away")  # as ApiClient says it
        return stream.read(n)

    return Download(size=len(data) if size == -1 else size, read=read)


def test_a_download_lands_whole_under_its_name(tmp_path: Path) -> None:
    target = target_path(str(tmp_path), "rows.csv")  # a folder: the name inside it
    assert target == tmp_path / "rows.csv"
    assert save(body(b"a,b\n"), target, False, Progress(4)) == 4
    assert target.read_bytes() == b"a,b\n"
    assert os.listdir(tmp_path) == ["rows.csv"]
    assert target_path(None, "rows.csv") == Path("rows.csv")
    assert target_path(str(tmp_path / "x.csv"), "rows.csv") == tmp_path / "x.csv"


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    target.write_bytes(b"mine")
    with pytest.raises(DownloadError, match="exists: pass --force to overwrite it"):
        check_target(target, force=False)
    with pytest.raises(DownloadError, match="exists"):
        save(body(b"theirs"), target, False, Progress(6))
    assert target.read_bytes() == b"mine"
    assert os.listdir(tmp_path) == ["rows.csv"]  # no partial file left
    save(body(b"theirs"), target, True, Progress(6))
    assert target.read_bytes() == b"theirs"


def test_a_broken_download_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "rows.csv"
    with pytest.raises(ServerUnreachable):
        save(body(b"x" * 100, fail_after=10), target, False, Progress(100))
    # Fewer bytes than announced, without an error from the connection: refused too.
    with pytest.raises(DownloadError, match="stopped after 5 of 9 bytes"):
        save(body(b"12345", size=9), target, False, Progress(9))
    assert os.listdir(tmp_path) == []


def test_targets_that_cannot_be_written_are_refused_first(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="is not a folder"):
        check_target(tmp_path / "missing" / "rows.csv", force=False)
    with pytest.raises(DownloadError, match="is a folder"):
        check_target(tmp_path, force=True)


def test_big_downloads_report_bytes_so_far(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.BytesIO()
    data = b"x" * (PROGRESS_MIN_BYTES * 2 + 5)
    assert copy(body(data), out, Progress(len(data))) == len(data)
    assert out.getvalue() == data
    lines = capsys.readouterr().err.splitlines()
    total = f"{len(data):,}"
    assert lines == [
        f"{PROGRESS_MIN_BYTES:,} of {total} bytes",
        f"{PROGRESS_MIN_BYTES * 2:,} of {total} bytes",
        f"{total} of {total} bytes",
    ]
    copy(body(b"small"), io.BytesIO(), Progress(5))
    assert capsys.readouterr().err == ""


def test_a_name_too_long_for_the_file_system_is_simply_missing(storage: Storage) -> None:
    with pytest.raises(StorageError, match="no such file in storage"):
        open_stored(storage, stored_file(URI.replace("rows.csv", "x" * 300)))
