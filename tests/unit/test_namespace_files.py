"""Namespace files: the storage side (headrace/namespace_storage.py) and their copy into
a task's working directory (connectors/namespace_files.py), on real folders."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import pydantic
import pytest

from headrace.connectors.base import TaskContext, TaskFailed
from headrace.connectors.namespace_files import (
    NamespaceFiles,
    add_namespace_files,
    copy_namespace_files,
)
from headrace.messages import LogLevel
from headrace.namespace_storage import (
    NotInStorage,
    StorageConflict,
    check_namespace,
    delete_namespace_file,
    delete_namespace_folder,
    namespace_entry,
    namespace_file_uri,
    namespace_file_writer,
    namespace_files,
    namespace_path,
    open_namespace_file,
    put_namespace_file,
)
from headrace.storage import NAMESPACE_FILES, Storage, StorageError, TaskFiles


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path / "storage")


def put(storage: Storage, namespace: str, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        assert put_namespace_file(storage, namespace, path, io.BytesIO(content)) == len(content)


def task_files(storage: Storage, namespace: str = "company") -> TaskFiles:
    return TaskFiles(storage, namespace, "flow", "exec1", "task", "run1")


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------ names and paths


def test_namespaces_are_those_flows_take() -> None:
    assert check_namespace("company.team_1-a") == "company.team_1-a"
    for bad in ("Company", ".hidden", "", "a/b", "..", "company\n", "x" * 300):
        with pytest.raises(StorageError):
            check_namespace(bad)


def test_paths_stay_inside_the_namespace_and_say_why_not() -> None:
    # A leading `/` is the namespace's root, as Kestra's API writes paths.
    assert namespace_path("/sql/load.sql").parts == ("sql", "load.sql")
    assert namespace_path("sql//load.sql").parts == ("sql", "load.sql")
    cases = {
        "../secret": "leads out",
        "sql/../../x": "leads out",
        "": "no path given",
        "/": "no path given",
        "a\0b": "NUL",
        "sql/.writing-1234": "reserved",
        "x" * 256: "longer than 255 bytes",
    }
    for path, reason in cases.items():
        with pytest.raises(StorageError, match=reason):
            namespace_path(path)


def test_a_namespace_file_has_a_uri_under_the_namespaces_files() -> None:
    uri = namespace_file_uri("company.team", "/sql/load orders.sql")
    assert uri == f"headrace:///company.team/{NAMESPACE_FILES}/sql/load%20orders.sql"


# ------------------------------------------------------------------ storage operations


def test_put_list_open_and_delete_round_trip(storage: Storage) -> None:
    put(storage, "company", {"sql/load.sql": b"select 1", "sql/deep/x.sql": b"2", "a.py": b""})
    entries = namespace_files(storage, "company")
    assert [(e.path, e.kind, e.size) for e in entries] == [
        ("a.py", "file", 0),
        ("sql", "directory", 0),
        ("sql/deep", "directory", 0),
        ("sql/deep/x.sql", "file", 1),
        ("sql/load.sql", "file", 8),
    ]
    own = namespace_files(storage, "company", "/sql", recursive=False)
    assert [(e.path, e.kind) for e in own] == [("deep", "directory"), ("load.sql", "file")]
    digests = {e.path: e.sha256 for e in namespace_files(storage, "company", "sql", sha256=True)}
    assert digests["load.sql"] == hashlib.sha256(b"select 1").hexdigest()
    assert digests["deep"] is None
    with open_namespace_file(storage, "company", "sql/load.sql") as file:
        assert file.read() == b"select 1"

    put(storage, "company", {"sql/load.sql": b"select 2"})  # replaced whole
    with open_namespace_file(storage, "company", "/sql/load.sql") as file:
        assert file.read() == b"select 2"

    assert delete_namespace_file(storage, "company", "a.py") is True
    assert delete_namespace_file(storage, "company", "a.py") is False
    assert delete_namespace_folder(storage, "company", "sql") == 2
    assert delete_namespace_folder(storage, "company", "sql") is None
    assert namespace_files(storage, "company") == []


def test_missing_and_mismatched_paths_are_told_apart(storage: Storage) -> None:
    assert namespace_files(storage, "nothing.here") == []  # no files yet: nothing to list
    with pytest.raises(NotInStorage, match="no folder 'sql'"):
        namespace_files(storage, "nothing.here", "sql")
    put(storage, "company", {"sql/load.sql": b"1"})
    with pytest.raises(NotInStorage, match=re.escape("no file 'sql/nope.sql'")):
        open_namespace_file(storage, "company", "sql/nope.sql")
    with pytest.raises(StorageConflict, match="'sql' is a folder"):
        open_namespace_file(storage, "company", "sql")
    with pytest.raises(StorageConflict, match=re.escape("'sql/load.sql' is a file, not a folder")):
        put(storage, "company", {"sql/load.sql/inner": b"x"})
    with pytest.raises(StorageConflict, match="'sql' is a folder"):
        put(storage, "company", {"sql": b"x"})
    with pytest.raises(StorageConflict, match="is a folder"):
        delete_namespace_file(storage, "company", "sql")
    with pytest.raises(StorageConflict, match="is not a folder"):
        delete_namespace_folder(storage, "company", "sql/load.sql")
    assert namespace_entry(storage, "company", "sql/nope/deeper") is None


def test_a_failed_write_leaves_neither_file_nor_temporary(storage: Storage) -> None:
    put(storage, "company", {"keep.sql": b"old"})
    with (
        pytest.raises(RuntimeError),
        namespace_file_writer(storage, "company", "keep.sql") as out,
    ):
        out.write(b"half of the new")
        raise RuntimeError("the upload broke")
    with open_namespace_file(storage, "company", "keep.sql") as file:
        assert file.read() == b"old"
    folder = storage.root / "company" / NAMESPACE_FILES
    assert sorted(os.listdir(folder)) == ["keep.sql"]


def test_nested_namespaces_keep_files_apart(storage: Storage) -> None:
    put(storage, "company", {"a.sql": b"parent"})
    put(storage, "company.team", {"b.sql": b"child"})
    assert [e.path for e in namespace_files(storage, "company")] == ["a.sql"]
    assert [e.path for e in namespace_files(storage, "company.team")] == ["b.sql"]
    with pytest.raises(NotInStorage):
        open_namespace_file(storage, "company", "b.sql")
    assert [e.path for e in task_files(storage, "company").namespace_files()] == ["a.sql"]


def test_links_among_a_namespaces_files_are_never_followed(
    storage: Storage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("gateway credentials")
    put(storage, "company", {"ok.sql": b"1"})
    folder = storage.root / "company" / NAMESPACE_FILES
    # What a task writing into the storage folder could plant.
    (folder / "dir-link").symlink_to(outside)
    (folder / "file-link").symlink_to(outside / "secret")

    kinds = {e.path: e.kind for e in namespace_files(storage, "company")}
    assert kinds == {"dir-link": "other", "file-link": "other", "ok.sql": "file"}
    for path in ("dir-link/secret", "file-link"):
        with pytest.raises(StorageConflict, match="symbolic link"):
            open_namespace_file(storage, "company", path)
    with pytest.raises(StorageConflict, match="symbolic link"):
        put(storage, "company", {"dir-link/planted": b"x"})
    with pytest.raises(StorageConflict, match="symbolic link"):
        namespace_files(storage, "company", "dir-link")
    with pytest.raises(StorageConflict, match="symbolic link"):
        delete_namespace_file(storage, "company", "dir-link/secret")
    assert sorted(os.listdir(outside)) == ["secret"]
    # Deleting a link removes the link, not what it points at.
    assert delete_namespace_file(storage, "company", "dir-link") is True
    assert delete_namespace_file(storage, "company", "file-link") is True
    assert (outside / "secret").read_text() == "gateway credentials"


def test_a_named_pipe_among_a_namespaces_files_is_refused_not_waited_on(
    storage: Storage,
) -> None:
    put(storage, "company", {"sql/ok.sql": b"1"})
    os.mkfifo(storage.root / "company" / NAMESPACE_FILES / "sql" / "pipe")
    kinds = {e.path: e.kind for e in namespace_files(storage, "company", "sql", sha256=True)}
    assert kinds == {"ok.sql": "file", "pipe": "other"}
    with pytest.raises(StorageConflict, match=re.escape("'sql/pipe' is not a regular file")):
        open_namespace_file(storage, "company", "sql/pipe")


def test_a_folder_is_deleted_without_following_links_inside(
    storage: Storage, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("x")
    put(storage, "company", {"dbt/models/a.sql": b"1"})
    (storage.root / "company" / NAMESPACE_FILES / "dbt" / "link").symlink_to(outside)
    assert delete_namespace_folder(storage, "company", "dbt") == 2  # a.sql and the link
    assert (outside / "kept").exists()


# ------------------------------------------------------------------ the task's copy


def test_the_model_takes_kestras_names_and_checks_patterns() -> None:
    selection = NamespaceFiles.model_validate(
        {"enabled": True, "include": ["/sql/**"], "exclude": ["sql/tmp"]}
    )
    assert selection.include == ["sql/**"]
    assert NamespaceFiles().enabled is False
    for bad in ({"include": ["../x"]}, {"exclude": [""]}, {"enable": True}):
        with pytest.raises(pydantic.ValidationError):
            NamespaceFiles.model_validate(bad)


def test_copies_every_file_at_its_path_when_enabled(storage: Storage, tmp_path: Path) -> None:
    files = {"main.py": b"print(1)", "dbt/models/a.sql": b"select 1", ".sqlfluff": b"[x]"}
    put(storage, "company", files)
    work = tmp_path / "work"
    work.mkdir()
    copied = copy_namespace_files(task_files(storage), NamespaceFiles(enabled=True), work)
    assert sorted(copied) == sorted(files)
    assert files_under(work) == files
    # Disabled (the default): nothing at all.
    other = tmp_path / "other"
    other.mkdir()
    assert copy_namespace_files(task_files(storage), NamespaceFiles(), other) == []
    assert files_under(other) == {}


def test_include_and_exclude_narrow_the_copy(storage: Storage, tmp_path: Path) -> None:
    put(
        storage,
        "company",
        {
            "dbt/models/a.sql": b"a",
            "dbt/models/staging/b.sql": b"b",
            "dbt/target/run.json": b"{}",
            "dbt/.user.yml": b"id: 1",
            "scripts/etl.py": b"etl",
            "top.sql": b"top",
        },
    )
    work = tmp_path / "work"
    work.mkdir()
    selection = NamespaceFiles(
        enabled=True, include=["dbt", "*.sql"], exclude=["dbt/target", "**/b.sql"]
    )
    copied = copy_namespace_files(task_files(storage), selection, work)
    # A folder pattern takes what it holds; `*` matches within one name and not dotfiles.
    assert sorted(copied) == ["dbt/.user.yml", "dbt/models/a.sql", "top.sql"]
    assert set(files_under(work)) == set(copied)

    with pytest.raises(TaskFailed, match="include 'sql/\\*\\*' matches no file"):
        copy_namespace_files(
            task_files(storage), NamespaceFiles(enabled=True, include=["sql/**"]), work
        )


def test_only_the_tasks_own_namespace_is_copied(storage: Storage, tmp_path: Path) -> None:
    put(storage, "company", {"parent.sql": b"p"})
    put(storage, "company.team", {"child.sql": b"c"})
    work = tmp_path / "work"
    work.mkdir()
    copied = copy_namespace_files(
        task_files(storage, "company.team"), NamespaceFiles(enabled=True), work
    )
    assert copied == ["child.sql"]


def test_links_in_the_storage_fail_the_task(storage: Storage, tmp_path: Path) -> None:
    put(storage, "company", {"ok.sql": b"1"})
    (storage.root / "company" / NAMESPACE_FILES / "passwd").symlink_to("/etc/passwd")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(TaskFailed, match="'passwd' is a symbolic link"):
        copy_namespace_files(task_files(storage), NamespaceFiles(enabled=True), work)
    assert files_under(work) == {}
    # Left out by the selection, it is not read, and fails nothing.
    selection = NamespaceFiles(enabled=True, exclude=["passwd"])
    assert copy_namespace_files(task_files(storage), selection, work) == ["ok.sql"]


def test_links_in_the_working_directory_are_not_written_through(
    storage: Storage, tmp_path: Path
) -> None:
    put(storage, "company", {"sql/load.sql": b"1"})
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    (work / "sql").symlink_to(outside)  # a `workingDirectory` someone prepared
    with pytest.raises(TaskFailed, match="'sql' is a symbolic link"):
        copy_namespace_files(task_files(storage), NamespaceFiles(enabled=True), work)
    assert list(outside.iterdir()) == []


def test_the_tasks_own_names_are_not_overwritten(storage: Storage, tmp_path: Path) -> None:
    put(storage, "company", {".headrace-commands.sh": b"rm -rf /", "main.sh": b"echo"})
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(TaskFailed, match="taken by the task's own files"):
        copy_namespace_files(task_files(storage), NamespaceFiles(enabled=True), work)
    selection = NamespaceFiles(enabled=True, include=["main.sh"])
    with pytest.raises(TaskFailed, match="taken by the task's own files"):
        copy_namespace_files(task_files(storage), selection, work, reserved=["main.sh"])


def test_no_storage_where_the_task_runs_is_a_clear_failure(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match="no file storage is set up"):
        copy_namespace_files(None, NamespaceFiles(enabled=True), tmp_path)
    assert copy_namespace_files(None, NamespaceFiles(), tmp_path) == []


async def test_add_namespace_files_copies_and_says_so(storage: Storage, tmp_path: Path) -> None:
    put(storage, "company", {"a.sql": b"1", "b.sql": b"2"})
    lines: list[tuple[LogLevel, str]] = []

    async def sink(level: LogLevel, message: str) -> None:
        lines.append((level, message))

    context = TaskContext(
        execution_id="exec1",
        namespace="company",
        flow_id="flow",
        task_id="task",
        task_run_id="run1",
        attempt=1,
        log_sink=sink,
        workdir=tmp_path,
        files=task_files(storage),
    )
    work = tmp_path / "work"
    work.mkdir()
    await add_namespace_files(NamespaceFiles(enabled=True), context, work)
    assert files_under(work) == {"a.sql": b"1", "b.sql": b"2"}
    assert lines == [(LogLevel.INFO, "namespaceFiles: copied 2 file(s) of namespace company")]


def test_the_execution_sweep_keeps_namespace_files(storage: Storage) -> None:
    # `{namespace}/_files/executions/…` has the shape of a flow's executions folder.
    put(storage, "company", {"executions/old/report.sql": b"kept"})
    assert storage.sweep_executions(older_than_s=0, now=4_000_000_000) == 0
    with open_namespace_file(storage, "company", "executions/old/report.sql") as file:
        assert file.read() == b"kept"
