"""The file storage (headrace/storage.py) on a real folder: URIs, what they may not
name, atomic writes, what a task may read, and the retention sweep (also as each worker
runs it, services/worker/sweeper.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.services.worker.sweeper import sweep_periodically
from headrace.storage import (
    EXECUTIONS,
    WRITING_PREFIX,
    Storage,
    StorageError,
    TaskFiles,
    is_uri,
    make_uri,
    parse_uri,
    stored_file,
)
from tests.unit.waiting import until

DAY_S = 24 * 3600.0
NOW = 1_800_000_000.0  # a fixed "now" for the sweep: no clock in these tests


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "storage")


def task_files(
    storage: Storage, namespace: str = "company.team", execution: str = "ex1"
) -> TaskFiles:
    return TaskFiles(storage, namespace, "nightly", execution, "extract", "run1")


# --- URIs ---------------------------------------------------------------------------

segment = st.text(
    st.characters(exclude_characters="/\0", exclude_categories=["Cs"]), min_size=1, max_size=12
).filter(lambda text: text not in (".", "..") and not text.startswith(WRITING_PREFIX))


@given(st.lists(segment, min_size=2, max_size=8))
def test_make_uri_and_parse_uri_round_trip(segments: list[str]) -> None:
    uri = make_uri(*segments)
    assert is_uri(uri)
    assert parse_uri(uri) == tuple(segments)
    assert stored_file(uri).name == segments[-1]


def test_a_segment_without_a_utf8_form_is_refused_not_a_crash() -> None:
    """A lone surrogate (JSON can carry one) names no file: a StorageError, not a
    UnicodeEncodeError that a route would turn into a 500."""
    with pytest.raises(StorageError, match="bad path segment"):
        make_uri("ns", "flow", "\ud800")
    with pytest.raises(StorageError, match="bad path segment"):
        parse_uri("headrace:///ns/flow/\ud800")


def test_characters_with_a_meaning_in_urls_are_quoted() -> None:
    uri = make_uri("ns", "flow", "a b?c#d%e", "é.csv")
    assert uri == "headrace:///ns/flow/a%20b%3Fc%23d%25e/%C3%A9.csv"
    assert parse_uri(uri) == ("ns", "flow", "a b?c#d%e", "é.csv")


def test_a_task_file_uri_names_its_execution_and_a_namespace_file_none(storage: Storage) -> None:
    uri = storage.task_file_uri("ns", "flow", "ex1", "extract", "run1", "rows.ion")
    assert uri == "headrace:///ns/flow/executions/ex1/tasks/extract/run1/rows.ion"
    file = stored_file(uri)
    assert (file.namespace, file.execution_id, file.name) == ("ns", "ex1", "rows.ion")
    assert stored_file("headrace:///ns/_files/sql/load.sql").execution_id is None
    # A namespace file may sit in a folder named like a task's: it is still no task's file.
    namespace_file = "headrace:///ns/_files/executions/ex1/tasks/extract/run1/rows.ion"
    assert stored_file(namespace_file).execution_id is None


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("headrace:///../x", "bad path segment '..'"),
        ("headrace:///ns/../../etc/passwd", "bad path segment '..'"),
        ("headrace:///ns/%2e%2e/x", "bad path segment '..'"),
        ("headrace:///ns/%2E%2E/x", "bad path segment '..'"),
        ("headrace:///ns/./x", "bad path segment '.'"),
        ("headrace:///ns/a%2Fb/x", "bad path segment 'a/b'"),
        ("headrace:///ns/a%2fb/x", "bad path segment 'a/b'"),
        ("headrace:///ns//x", "bad path segment ''"),
        ("headrace:///ns/x/", "bad path segment ''"),
        ("headrace:///ns/x%00.csv", "bad path segment"),
        ("headrace:///ns", "not a storage URI"),
        ("headrace:ns/x", "not a storage URI"),
        ("file:///etc/passwd", "not a storage URI"),
        ("http://example.com/ns/x", "not a storage URI"),
        ("headrace://host/ns/x", "not a storage URI"),
        ("headrace:///ns/x?y=1", "not a storage URI"),
        ("headrace:///ns/x#top", "not a storage URI"),
        ("/etc/passwd", "not a storage URI"),
        ("", "not a storage URI"),
    ],
)
def test_uris_that_could_leave_the_root_are_refused(
    storage: Storage, uri: str, reason: str
) -> None:
    with pytest.raises(StorageError, match="is not a storage") as refused:
        parse_uri(uri)
    assert reason in str(refused.value)
    with pytest.raises(StorageError):
        storage.path(uri)
    with pytest.raises(StorageError):
        stored_file(uri)


def test_a_value_that_is_not_text_is_refused() -> None:
    with pytest.raises(StorageError, match="not a storage URI"):
        parse_uri(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "nul\0"])
def test_make_uri_refuses_a_bad_segment(bad: str) -> None:
    with pytest.raises(StorageError, match="bad path segment"):
        make_uri("ns", "flow", bad)


def test_every_path_stays_under_the_root(storage: Storage) -> None:
    path = storage.path("headrace:///ns/flow/%2E..%2E/x%20y")
    assert path == storage.root / "ns" / "flow" / "...." / "x y"
    assert path.resolve().is_relative_to(storage.root.resolve())


# --- writing ------------------------------------------------------------------------

URI = "headrace:///ns/flow/executions/ex1/tasks/extract/run1/rows.csv"


def leftovers(storage: Storage) -> list[str]:
    return sorted(p.name for p in storage.root.rglob("*") if p.is_file())


def test_a_writer_makes_the_file_when_its_block_ends(storage: Storage) -> None:
    with storage.writer(URI) as out:
        out.write(b"a,b\n")
        assert leftovers(storage) != ["rows.csv"]  # not there before the end
    assert storage.path(URI).read_bytes() == b"a,b\n"
    assert leftovers(storage) == ["rows.csv"]
    with storage.open(URI) as file:
        assert file.read() == b"a,b\n"
    assert storage.size(URI) == 4


def test_a_failing_block_leaves_no_file_and_no_temporary_file(storage: Storage) -> None:
    with pytest.raises(RuntimeError, match="boom"), storage.writer(URI) as out:
        out.write(b"half")
        raise RuntimeError("boom")
    assert leftovers(storage) == []
    with pytest.raises(StorageError, match="no such file in storage"):
        storage.open(URI)


def test_a_failing_rewrite_keeps_the_earlier_file_whole(storage: Storage) -> None:
    with storage.writer(URI) as out:
        out.write(b"first attempt")
    with pytest.raises(RuntimeError), storage.writer(URI) as out:
        out.write(b"second")
        raise RuntimeError("attempt cancelled")
    assert storage.path(URI).read_bytes() == b"first attempt"
    with storage.writer(URI) as out:
        out.write(b"third")
    assert storage.path(URI).read_bytes() == b"third"  # replaced whole
    assert leftovers(storage) == ["rows.csv"]


def test_missing_files_are_storage_errors(storage: Storage) -> None:
    with pytest.raises(StorageError, match="no such file in storage"):
        storage.size(URI)
    with pytest.raises(StorageError, match="no such file in storage"):
        storage.open(URI)
    storage.path(URI).mkdir(parents=True)  # a folder is not a file
    with pytest.raises(StorageError, match="no such file in storage"):
        storage.open(URI)


# --- what a task run sees -------------------------------------------------------------


def test_a_task_run_writes_under_its_own_folder(storage: Storage) -> None:
    files = task_files(storage)
    with files.writer("rows.csv") as out:
        out.write(b"x")
    uri = files.uri("rows.csv")
    assert uri == "headrace:///company.team/nightly/executions/ex1/tasks/extract/run1/rows.csv"
    with files.open(uri) as file:
        assert file.read() == b"x"


def test_a_task_reads_no_file_of_another_namespace(storage: Storage) -> None:
    theirs = task_files(storage, namespace="other.team")
    with theirs.writer("secret.csv") as out:
        out.write(b"theirs")
    with pytest.raises(StorageError, match="reads only its own namespace's files") as refused:
        task_files(storage).open(theirs.uri("secret.csv"))
    assert "'other.team'" in str(refused.value)


def test_a_link_planted_on_the_way_does_not_lead_a_task_to_another_namespace(
    storage: Storage,
) -> None:
    theirs = task_files(storage, namespace="other.team")
    with theirs.writer("secret.csv") as out:
        out.write(b"theirs")
    # A task of company.team can write into the storage folder: a link there, under its
    # own namespace, to the other namespace's execution folder.
    planted = storage.root / "company.team" / "nightly" / EXECUTIONS / "ex2"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(storage.path(theirs.uri("secret.csv")).parents[3])
    uri = task_files(storage, execution="ex2").uri("secret.csv")
    assert storage.path(uri).read_bytes() == b"theirs"  # a plain open follows it
    for read in (task_files(storage).open, storage.open, storage.size):
        with pytest.raises(StorageError, match="no such file in storage"):
            read(uri)


def test_only_regular_files_are_read(storage: Storage) -> None:
    files = task_files(storage)
    with files.writer("rows.csv") as out:
        out.write(b"x")
    os.mkfifo(storage.path(files.uri("pipe")))  # a plain open would wait for a writer
    storage.path(files.uri("link.csv")).symlink_to(storage.path(files.uri("rows.csv")))
    for name in ("pipe", "link.csv"):
        with pytest.raises(StorageError, match="no such file in storage"):
            files.open(files.uri(name))
    with files.open(files.uri("rows.csv")) as file:
        assert file.read() == b"x"


def test_a_task_reading_a_missing_file_is_told_so(storage: Storage) -> None:
    files = task_files(storage)
    with pytest.raises(StorageError, match="no such file in storage"):
        files.open(files.uri("never-written.csv"))
    with pytest.raises(StorageError, match="not a storage"):
        files.open("headrace:///company.team/../other.team/x/y")


# --- retention ----------------------------------------------------------------------


def write(storage: Storage, uri: str, age_s: float, now: float = NOW) -> Path:
    """A file at `uri` last changed `age_s` before `now` (its folders too)."""
    with storage.writer(uri) as out:
        out.write(b"data")
    path = storage.path(uri)
    for changed in (path, *path.relative_to(storage.root).parents):
        os.utime(storage.root / changed, (now - age_s, now - age_s))
    return path


def execution_uri(execution: str, name: str = "rows.csv", namespace: str = "ns") -> str:
    return make_uri(namespace, "flow", "executions", execution, "tasks", "t", "run", name)


def test_the_sweep_removes_executions_older_than_the_retention(storage: Storage) -> None:
    old = write(storage, execution_uri("old"), age_s=8 * DAY_S)
    also_old = write(storage, execution_uri("also-old", namespace="other"), age_s=30 * DAY_S)
    fresh = write(storage, execution_uri("fresh"), age_s=DAY_S)
    # One recent file keeps its whole execution: a retried task wrote it lately.
    mixed_old = write(storage, execution_uri("mixed", "a.csv"), age_s=9 * DAY_S)
    mixed_new = write(storage, execution_uri("mixed", "b.csv"), age_s=2 * DAY_S)
    namespace_file = write(storage, "headrace:///ns/_files/sql/load.sql", age_s=90 * DAY_S)
    # A namespace's own folder named `executions` is no execution's.
    look_alike = write(
        storage, "headrace:///ns/_files/executions/ex9/tasks/t/run/x.sql", age_s=90 * DAY_S
    )

    assert storage.sweep_executions(7 * DAY_S, now=NOW) == 2

    assert not old.exists() and not old.parents[3].exists()  # the execution's folder
    assert not also_old.exists()
    for kept in (fresh, mixed_old, mixed_new, namespace_file, look_alike):
        assert kept.read_bytes() == b"data", kept
    assert storage.sweep_executions(7 * DAY_S, now=NOW) == 0  # nothing more to do


def test_the_sweep_follows_no_link_planted_in_the_storage(storage: Storage, tmp_path: Path) -> None:
    """A task can write into the storage folder: links it plants must not lead the sweep
    to a namespace's own files or out of the storage."""
    own = write(storage, "headrace:///b/_files/executions/e1/tasks/t/run/x.sql", age_s=90 * DAY_S)
    outside = tmp_path / "outside" / "executions" / "e2"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("mine")
    os.utime(outside, (NOW - 90 * DAY_S, NOW - 90 * DAY_S))
    (storage.root / "a").mkdir()
    os.symlink(storage.root / "b" / "_files", storage.root / "a" / "x")  # a flow folder
    os.symlink(tmp_path / "outside", storage.root / "a" / "y")
    (storage.root / "c" / "flow").mkdir(parents=True)
    os.symlink(outside.parent, storage.root / "c" / "flow" / "executions")  # executions/
    (storage.root / "d" / "flow" / "executions").mkdir(parents=True)
    os.symlink(outside, storage.root / "d" / "flow" / "executions" / "e3")  # an execution

    assert storage.sweep_executions(7 * DAY_S, now=NOW) == 0
    assert own.read_bytes() == b"data"
    assert (outside / "keep.txt").read_text() == "mine"


def test_a_sweep_of_a_storage_never_written_removes_nothing(storage: Storage) -> None:
    assert not storage.root.exists()
    assert storage.sweep_executions(0, now=NOW) == 0


async def test_workers_sweep_at_start_and_again_after_a_failed_sweep(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # A file where the storage's folder belongs: opening it fails, a real OSError.
    broken = storage.root
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"")
    caplog.set_level(logging.INFO, logger="headrace.services.worker.sweeper")

    def logged(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    sweeping = asyncio.create_task(
        sweep_periodically(storage, timedelta(days=7), interval_s=0.01, label="worker w1")
    )
    try:
        failure = (await until(lambda: logged("failed"), "a failed sweep"))[0]
        assert failure.levelno == logging.WARNING
        assert "worker w1: sweeping the file storage" in failure.getMessage()
        assert "NotADirectoryError" in failure.getMessage()

        broken.unlink()
        # The loop sweeps as of the wall clock: files a week and a day old by it.
        old = write(storage, execution_uri("old"), age_s=8 * DAY_S, now=time.time())
        await until(lambda: not old.exists(), "the old execution's files to go")
        await until(lambda: logged("removed the stored files of 1 execution"), "the count")
        assert not sweeping.done()  # a failing sweep did not end the loop
    finally:
        sweeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeping
