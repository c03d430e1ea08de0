"""Kestra's script forms of `shell` and `python`: `shell.script`, `python.commands`, and
`beforeCommands`, `inputFiles` and `outputFiles` on all four types, run as a worker runs
them (`headrace.testing.run_task`).

The `dependencies` tests are in test_python_dependencies.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from headrace.flow.loader import load_flow
from headrace.namespace_storage import put_namespace_file
from headrace.states import State
from headrace.storage import Storage
from headrace.testing import TEST_NAMESPACE, TaskRun, run_task
from tests.stored_runs import run_stored
from tests.unit.test_connectors import process_alive, wait_until
from tests.unit.test_flow_loader import only_error

SCRIPT_TYPES = ["shell", "shell.script", "python", "python.commands"]
# A task stuck on a named pipe fails on this instead of hanging the test run.
PIPE_TIMEOUT = timedelta(seconds=10)


def body(task_type: str, shell_lines: list[str]) -> dict:
    """The task's own code for `task_type` doing what `shell_lines` do."""
    if task_type in ("shell", "python.commands"):
        return {"commands": shell_lines}
    if task_type == "shell.script":
        return {"script": "\n".join(shell_lines)}
    lines = ", ".join(repr(line) for line in shell_lines)
    return {
        "script": f"import subprocess\nfor line in [{lines}]:\n    subprocess.run(line, shell=True, check=True)\n"
    }


# ------------------------------------------------------------------ the two new types


async def test_shell_script_runs_before_commands_and_script_in_one_shell() -> None:
    run = await run_task(
        "shell.script",
        {
            "beforeCommands": ["GREETING=hello"],
            "script": 'echo "$GREETING $WHO"\nif true; then\n  echo two\nfi\n',
            "env": {"WHO": "world"},
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert run.messages == ["hello world", "two"]
    assert run.outputs == {"exitCode": 0}


async def test_shell_script_stops_at_the_first_failing_command() -> None:
    run = await run_task("shell.script", {"script": "echo before\nfalse\necho never\n"})
    assert run.state is State.FAILED
    assert run.error == "exit code 1"
    assert run.messages == ["before"]


async def test_python_commands_run_input_files_with_the_tasks_python() -> None:
    main = "import sys\nfrom headrace.task import outputs\noutputs(python=sys.executable)\n"
    run = await run_task(
        "python.commands",
        {"inputFiles": {"main.py": main}, "commands": ["python main.py", "python3 --version"]},
    )
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"python": sys.executable, "exitCode": 0}
    assert run.messages == [f"Python {sys.version.split()[0]}"]


async def test_kestra_names_run_the_script_forms() -> None:
    script = await run_task("io.kestra.plugin.scripts.shell.Script", {"script": "echo a"})
    commands = await run_task(
        "io.kestra.plugin.scripts.python.Commands", {"commands": ["python -c 'print(1 + 1)'"]}
    )
    assert (script.state, script.messages) == (State.SUCCESS, ["a"])
    assert (commands.state, commands.messages) == (State.SUCCESS, ["2"])


# ------------------------------------------------------------------ beforeCommands


async def test_python_before_commands_run_with_the_tasks_python_first_on_path() -> None:
    run = await run_task(
        "python",
        {
            "beforeCommands": ['python -c "import sys; print(sys.executable)"'],
            "script": "print('script')",
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert run.messages == [sys.executable, "script"]


@pytest.mark.parametrize("task_type", SCRIPT_TYPES)
async def test_a_failing_before_command_stops_the_task(task_type: str, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    run = await run_task(
        task_type,
        {
            "beforeCommands": ["echo before", "exit 3", "echo never"],
            "env": {"RAN": str(ran)},
            **body(task_type, ['touch "$RAN"']),
        },
    )
    assert run.state is State.FAILED
    assert run.error == "exit code 3"
    assert run.messages == ["before"]
    assert not ran.exists()


async def test_a_kill_during_before_commands_ends_them_and_runs_nothing_else(
    tmp_path: Path,
) -> None:
    pid_file, ran = tmp_path / "pid", tmp_path / "ran"
    task = asyncio.create_task(
        run_task(
            "python.commands",
            {
                "beforeCommands": ['sleep 300 & echo $! > "$PID_FILE"', "wait"],
                "commands": ['touch "$RAN"'],
                "env": {"PID_FILE": str(pid_file), "RAN": str(ran)},
            },
        )
    )
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the pid file")
    sleeper = int(pid_file.read_text())
    assert process_alive(sleeper)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not process_alive(sleeper), f"process {sleeper} to end")
    assert not ran.exists()


# ------------------------------------------------------------------ inputFiles


@pytest.mark.parametrize("task_type", SCRIPT_TYPES)
async def test_input_files_are_written_before_anything_runs(task_type: str) -> None:
    run = await run_task(
        task_type,
        {
            "inputFiles": {"data/rows.csv": "id\n1\n", "notes.txt": "ünïcode"},
            "beforeCommands": ["cat notes.txt; echo"],
            **body(task_type, ["wc -l < data/rows.csv"]),
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert [line.strip() for line in run.messages] == ["ünïcode", "2"]


async def test_input_files_go_to_the_working_directory(tmp_path: Path) -> None:
    run = await run_task(
        "shell",
        {
            "workingDirectory": str(tmp_path),
            "inputFiles": {"a/b/c.txt": "deep"},
            "commands": ["pwd", "cat a/b/c.txt"],
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert run.messages == [str(tmp_path), "deep"]
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "deep"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/etc/cron.d/x", "inputFiles '/etc/cron.d/x' is an absolute path"),
        ("../x", "inputFiles '../x' leads out of the task's working directory (`..`)"),
        ("a/../../x", "inputFiles 'a/../../x' leads out of the task's working directory"),
        (".headrace-commands.sh", "names starting with '.headrace' are the task's own"),
        ("dir/", "inputFiles 'dir/' names a directory"),
    ],
)
async def test_input_file_paths_that_leave_the_directory_are_refused(
    path: str, message: str
) -> None:
    run = await run_task("shell", {"inputFiles": {path: "x"}, "commands": ["true"]})
    assert run.state is State.FAILED
    assert run.error is not None and run.error.startswith("invalid property 'inputFiles': ")
    assert message in run.error


async def test_an_input_file_is_never_written_through_a_symbolic_link(tmp_path: Path) -> None:
    outside, workdir = tmp_path / "outside", tmp_path / "work"
    outside.mkdir()
    workdir.mkdir()
    (outside / "victim.txt").write_text("intact")
    (workdir / "linked-dir").symlink_to(outside)
    (workdir / "linked-file.txt").symlink_to(outside / "victim.txt")
    for path in ("linked-dir/victim.txt", "linked-file.txt"):
        run = await run_task(
            "shell",
            {"workingDirectory": str(workdir), "inputFiles": {path: "owned"}, "commands": ["true"]},
        )
        assert run.state is State.FAILED
        name = path.split("/")[0]
        assert run.error == (
            f"inputFiles {path!r}: {name!r} is a symbolic link, which could lead out of the"
            " working directory: refused"
        )
    assert (outside / "victim.txt").read_text() == "intact"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]


# ------------------------------------------------------------------ inputFiles from storage

# A file an earlier task of the same namespace (another flow even) stored.
STORED = "headrace:///test/loader/executions/e1/tasks/query/r1/query.jsonl"
COUNT_LINES = """\
import hashlib
from headrace.task import outputs
with open("data/rows.jsonl", "rb") as file:
    data = file.read()
outputs(lines=data.count(b"\\n"), sha256=hashlib.sha256(data).hexdigest())
"""


def stored_file(storage: Storage, uri: str, data: bytes) -> None:
    with storage.writer(uri) as file:
        file.write(data)


@pytest.mark.parametrize("task_type", ["python", "shell"])
async def test_a_storage_uri_input_file_is_copied_in_whole(task_type: str, tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    # Over the copy's chunk, and not text: copied as bytes, never read whole.
    data = b"".join(b'{"id": %d, "raw": "\xff"}\n' % i for i in range(150_000))
    assert len(data) > 3 * 1024 * 1024
    stored_file(storage, STORED, data)
    code = (
        {"script": COUNT_LINES}
        if task_type == "python"
        else {"commands": ['cmp data/rows.jsonl "$EXPECTED"', "wc -l < data/rows.jsonl"]}
    )
    run = await run_stored(
        task_type,
        {
            "inputFiles": {"data/rows.jsonl": STORED, "note.txt": "text stays text"},
            "env": {"EXPECTED": str(storage.path(STORED))},
            **code,
        },
        storage,
    )
    assert run.state is State.SUCCESS, run.error
    if task_type == "python":
        assert run.outputs["lines"] == 150_000
        assert run.outputs["sha256"] == hashlib.sha256(data).hexdigest()
    else:
        assert run.messages == ["150000"]


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        (
            "headrace:///other/loader/executions/e1/tasks/query/r1/query.jsonl",
            "headrace:///other/loader/executions/e1/tasks/query/r1/query.jsonl: a file of"
            " namespace 'other'; a task of 'test' reads only its own namespace's files",
        ),
        (
            "headrace:///test/loader/executions/e1/tasks/query/r2/query.jsonl",
            "headrace:///test/loader/executions/e1/tasks/query/r2/query.jsonl: no such file"
            " in storage",
        ),
    ],
)
async def test_a_storage_uri_of_another_namespace_or_no_file_fails_naming_it(
    uri: str, error: str, tmp_path: Path
) -> None:
    storage = Storage(tmp_path)
    stored_file(storage, uri.replace("r2", "r1"), b"secret\n")  # exists for `other`
    run = await run_stored(
        "shell", {"inputFiles": {"rows.jsonl": uri}, "commands": ["true"]}, storage
    )
    assert run.state is State.FAILED
    assert run.error == f"inputFiles 'rows.jsonl': {error}"


async def test_a_storage_uri_is_never_copied_through_a_link(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    stored_file(storage, STORED, b"rows\n")
    outside, workdir = tmp_path / "outside", tmp_path / "work"
    outside.mkdir()
    workdir.mkdir()
    (outside / "victim.txt").write_text("intact")
    (workdir / "linked-dir").symlink_to(outside)
    (workdir / "linked-file.txt").symlink_to(outside / "victim.txt")
    for path in ("linked-dir/victim.txt", "linked-file.txt"):
        run = await run_stored(
            "shell",
            {"workingDirectory": str(workdir), "inputFiles": {path: STORED}, "commands": ["true"]},
            storage,
        )
        assert (run.state, run.error) == (
            State.FAILED,
            f"inputFiles {path!r}: {path.split('/')[0]!r} is a symbolic link, which could lead"
            " out of the working directory: refused",
        )
    assert (outside / "victim.txt").read_text() == "intact"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]

    # Nor is a link standing in the storage for a stored file followed.
    linked = STORED.replace("r1", "r9")
    storage.path(linked).parent.mkdir(parents=True)
    storage.path(linked).symlink_to(outside / "victim.txt")
    run = await run_stored(
        "shell", {"inputFiles": {"in.txt": linked}, "commands": ["true"]}, storage
    )
    assert run.error == f"inputFiles 'in.txt': {linked}: no such file in storage"


async def test_a_storage_uri_without_a_storage_or_malformed_fails_clearly() -> None:
    run = await run_stored(
        "shell", {"inputFiles": {"rows.jsonl": STORED}, "commands": ["true"]}, None
    )
    assert (run.state, run.error) == (
        State.FAILED,
        "inputFiles 'rows.jsonl' is a storage URI, and no file storage is set up where this"
        " task runs (workers have one: HEADRACE_STORAGE_DIR)",
    )
    error = only_error(
        "id: f\nnamespace: n\ntasks:\n  - id: t\n    type: shell\n    commands: [ls]\n"
        "    inputFiles:\n      rows.jsonl: headrace:///n/../x\n"
    )
    assert error.path == "tasks[0].inputFiles"
    assert error.message.startswith(
        "inputFiles 'rows.jsonl': 'headrace:///n/../x' is not a storage file: bad path segment '..'"
    )


async def test_an_input_file_under_another_input_file_fails_naming_both() -> None:
    run = await run_task(
        "shell", {"inputFiles": {"config": "x", "config/app.ini": "y"}, "commands": ["true"]}
    )
    assert run.state is State.FAILED
    assert run.error == "inputFiles 'config/app.ini': 'config' is a file, not a directory"


def test_an_input_file_may_not_replace_the_python_script() -> None:
    def flow(task_type: str, code: str) -> str:
        return (
            f"id: f\nnamespace: n\ntasks:\n  - id: t\n    type: {task_type}\n    {code}\n"
            "    inputFiles:\n      headrace_script.py: print('not mine')\n"
        )

    error = only_error(flow("python", "script: pass"))
    assert (error.line, error.path) == (8, "tasks[0].inputFiles")
    assert error.message.startswith(
        "inputFiles 'headrace_script.py': that name is taken by the task's own script"
    )
    # python.commands has no script file of its own: the name is free there.
    assert load_flow(flow("python.commands", "commands: [python headrace_script.py]"))


def test_input_file_paths_are_checked_when_the_flow_is_loaded() -> None:
    error = only_error(
        """
        id: f
        namespace: n
        tasks:
          - id: t
            type: shell
            commands: [ls]
            inputFiles:
              ../secrets.txt: x
        """
    )
    assert (error.line, error.path) == (9, "tasks[0].inputFiles")  # the mapping's first line
    assert "inputFiles '../secrets.txt' leads out of the task's working directory" in error.message


@pytest.mark.parametrize(
    ("key", "value", "path", "message"),
    [
        ("inputFiles", "[a.txt]", "tasks[0].inputFiles", "must be a mapping (key: value)"),
        ("outputFiles", "out.txt", "tasks[0].outputFiles", "must be a list"),
        ("beforeCommands", "echo hi", "tasks[0].beforeCommands", "must be a list"),
        ("outputFiles", "[/etc/passwd]", "tasks[0].outputFiles[0]", "is an absolute path"),
    ],
)
def test_wrong_property_types_are_refused_when_the_flow_is_loaded(
    key: str, value: str, path: str, message: str
) -> None:
    error = only_error(
        f"id: f\nnamespace: n\ntasks:\n  - id: t\n    type: shell.script\n"
        f"    script: ls\n    {key}: {value}\n"
    )
    assert (error.line, error.path) == (7, path)
    assert message in error.message


# ------------------------------------------------------------------ outputFiles


def stored_texts(run: TaskRun) -> dict[str, str]:
    """The task's output files (`outputFiles`: path -> storage URI), each by its text."""
    return {path: run.read_file(uri).decode() for path, uri in run.outputs["outputFiles"].items()}


@pytest.mark.parametrize("task_type", SCRIPT_TYPES)
async def test_output_files_are_stored_and_named_by_their_uris(task_type: str) -> None:
    run = await run_task(
        task_type,
        {
            "outputFiles": ["report.txt", "out/*.csv"],
            **body(
                task_type,
                [
                    "mkdir -p out/deeper",
                    "printf 'done\\n' > report.txt",
                    "echo a > out/a.csv",
                    "echo b > out/b.csv",
                    "echo c > out/deeper/c.csv",
                    "echo x > out/x.txt",
                ],
            ),
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_texts(run) == {"out/a.csv": "a\n", "out/b.csv": "b\n", "report.txt": "done\n"}
    # Kestra's naming: a task run's folder holds the files, each name after a digest of its
    # path (out/a.csv and a.csv would differ).
    folder = f"headrace:///{TEST_NAMESPACE}/test-flow/executions/test-execution/tasks/"
    for path, uri in run.outputs["outputFiles"].items():
        assert uri.startswith(folder), uri
        assert re.fullmatch(r"[0-9a-f]{12}-" + re.escape(path.rsplit("/")[-1]), uri.rsplit("/")[-1])
    assert len(set(run.outputs["outputFiles"].values())) == 3


async def test_double_star_matches_any_depth_but_not_hidden_files() -> None:
    run = await run_task(
        "shell",
        {
            "outputFiles": ["**/*.json"],
            "commands": [
                "mkdir -p x/y .hidden",
                "echo 1 > a.json",
                "echo 2 > x/y/b.json",
                "echo 3 > x/.c.json",
                "echo 4 > .hidden/d.json",
                "echo 5 > x/e.txt",
            ],
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_texts(run) == {"a.json": "1\n", "x/y/b.json": "2\n"}


async def test_a_pattern_matching_nothing_gives_no_file_and_no_files_no_key() -> None:
    matched = await run_task("shell", {"outputFiles": ["*.csv"], "commands": ["true"]})
    assert matched.state is State.SUCCESS, matched.error
    assert matched.outputs == {"outputFiles": {}, "exitCode": 0}
    unasked = await run_task("shell", {"commands": ["echo x > a.csv"]})
    assert unasked.outputs == {"exitCode": 0}


async def test_the_python_script_itself_is_not_an_output_file() -> None:
    run = await run_task(
        "python",
        {"outputFiles": ["*.py"], "script": "open('made.py', 'w').write('x = 1\\n')"},
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_texts(run) == {"made.py": "x = 1\n"}


async def test_a_missing_output_file_fails_the_task() -> None:
    run = await run_task("shell", {"outputFiles": ["result.json"], "commands": ["true"]})
    assert run.state is State.FAILED
    assert run.error == "outputFiles 'result.json': the task did not create this file"


async def test_a_directory_is_no_output_file() -> None:
    run = await run_task("shell", {"outputFiles": ["out"], "commands": ["mkdir out"]})
    assert run.state is State.FAILED
    assert run.error == (
        "outputFiles 'out' is a directory: name its files, or a pattern such as 'out/**'"
    )


async def test_binary_and_large_output_files_are_stored_byte_for_byte() -> None:
    # Neither fits in outputs: the storage holds them, and outputs only their URIs.
    run = await run_task(
        "shell",
        {
            "outputFiles": ["data.bin", "big.txt", "nul.txt"],
            "commands": [
                "printf 'ok\\377\\376\\000end' > data.bin",
                "head -c 3000000 /dev/zero | tr '\\0' a > big.txt",
                "printf 'a\\000b\\n' > nul.txt",  # UTF-8 text with a NUL: kept
            ],
        },
    )
    assert run.state is State.SUCCESS, run.error
    files = run.outputs["outputFiles"]
    assert run.read_file(files["data.bin"]) == b"ok\xff\xfe\x00end"
    assert run.read_file(files["big.txt"]) == b"a" * 3_000_000
    assert run.read_file(files["nul.txt"]) == b"a\x00b\n"


async def test_secrets_are_masked_in_text_and_in_binary_output_files() -> None:
    # Stored files may be downloaded by a reader: a secret is masked in a binary file
    # too (read byte for byte as Latin-1), whose other bytes are kept as they were.
    lines = "".join(f"line {i}\n" for i in range(200_000))  # several chunks
    run = await run_task(
        "python",
        {
            "outputFiles": ["*.txt", "*.bin"],
            "script": (
                "import os\n"
                "token = os.environ['TOKEN']\n"
                f"open('log.txt', 'w').write({lines!r} + 'token=' + token + '\\n')\n"
                "open('blob.bin', 'wb').write(b'\\xff' + token.encode())\n"
            ),
            "env": {"TOKEN": "s3cr3t-value"},
        },
        secrets={"TOKEN": "s3cr3t-value"},
    )
    assert run.state is State.SUCCESS, run.error
    files = run.outputs["outputFiles"]
    assert run.read_file(files["log.txt"]).decode() == lines + "token=******\n"
    assert run.read_file(files["blob.bin"]) == b"\xff******"


async def test_too_many_output_files_for_the_outputs_fail_before_any_is_stored() -> None:
    run = await run_task(
        "shell",
        {"outputFiles": ["f/*"], "commands": ["mkdir f", "cd f && seq 1 2500 | xargs touch"]},
    )
    assert run.state is State.FAILED
    assert run.error is not None
    assert run.error.startswith("outputFiles matched 2500 files, whose URIs take")
    assert "put them in one archive (tar, zip) and list that" in run.error
    assert run.storage_dir is not None and not any(run.storage_dir.iterdir())


async def test_output_files_without_a_file_storage_fail_the_task_saying_so() -> None:
    run = await run_stored(
        "shell", {"outputFiles": ["a.txt"], "commands": ["echo a > a.txt"]}, None
    )
    assert run.state is State.FAILED
    assert run.error == (
        "outputFiles 'a.txt' is to be kept in the file storage, and no file storage is set"
        " up where this task runs (workers have one: HEADRACE_STORAGE_DIR)"
    )
    matched_none = await run_stored("shell", {"outputFiles": ["*.csv"], "commands": ["true"]}, None)
    assert matched_none.outputs == {"outputFiles": {}, "exitCode": 0}


async def test_an_output_file_linking_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "worker-only.txt"
    secret.write_text("not for the outputs")
    for patterns in (["leak.txt"], ["*.txt"]):
        run = await run_task(
            "shell",
            {
                "outputFiles": patterns,
                "env": {"SECRET_PATH": str(secret)},
                "commands": ['ln -s "$SECRET_PATH" leak.txt'],
            },
        )
        assert run.state is State.FAILED
        assert run.error == (
            "outputFiles 'leak.txt' is a symbolic link leading out of the task's working"
            " directory: refused"
        )


async def test_a_link_to_a_directory_outside_is_not_walked(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.csv").write_text("outside")
    run = await run_task(
        "shell",
        {
            "outputFiles": ["**/*.csv"],
            "env": {"OUTSIDE": str(outside)},
            "commands": ['ln -s "$OUTSIDE" linked', "ln -s . loop", "echo in > in.csv"],
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_texts(run) == {"in.csv": "in\n"}


async def test_a_named_pipe_is_no_output_file_and_holds_nothing_up() -> None:
    # Opening a pipe that no one writes to would wait forever (in a thread that a
    # timeout cannot stop): it must fail at once, naming the file.
    for patterns, commands in (
        (["out.txt"], ["mkfifo out.txt"]),
        (["*.txt"], ["mkfifo .pipe", "ln -s .pipe out.txt"]),  # a link to one
    ):
        run = await run_task(
            "shell", {"outputFiles": patterns, "commands": commands}, timeout=PIPE_TIMEOUT
        )
        assert run.state is State.FAILED
        assert run.error == "outputFiles 'out.txt' is a named pipe, not a regular file: refused"


async def test_an_input_file_is_never_written_into_a_named_pipe(tmp_path: Path) -> None:
    pipe = tmp_path / "in.txt"
    os.mkfifo(pipe)
    properties = {
        "workingDirectory": str(tmp_path),
        "inputFiles": {"in.txt": "data"},
        "commands": ["true"],
    }
    refused = "inputFiles 'in.txt': 'in.txt' is a named pipe, not a regular file: refused"
    run = await run_task("shell", properties, timeout=PIPE_TIMEOUT)  # no one reads it
    assert (run.state, run.error) == (State.FAILED, refused)
    reader = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)  # someone reads it
    try:
        run = await run_task("shell", properties, timeout=PIPE_TIMEOUT)
        assert (run.state, run.error) == (State.FAILED, refused)
        assert os.read(reader, 100) == b""  # nothing was written into it
    finally:
        os.close(reader)


async def test_output_files_are_read_from_the_working_directory(tmp_path: Path) -> None:
    run = await run_task(
        "shell",
        {
            "workingDirectory": str(tmp_path),
            "outputFiles": ["*.txt"],
            "commands": ["echo hi > a.txt"],
        },
    )
    assert run.state is State.SUCCESS, run.error
    assert stored_texts(run) == {"a.txt": "hi\n"}
    assert os.listdir(tmp_path) == ["a.txt"]  # the task's script stays in its own directory


# ------------------------------------------------------------------ namespaceFiles


@pytest.mark.parametrize("task_type", ["shell", "python.commands"])
async def test_namespace_files_are_copied_in_before_input_files(
    tmp_path: Path, task_type: str
) -> None:
    storage = Storage(tmp_path / "storage")
    for path, content in {
        "sql/load.sql": b"SELECT 1;\n",
        "sql/old/drop.sql": b"DROP TABLE x;\n",
        "main.txt": b"from the namespace\n",
        "data.bin": b"\x00\xff",
    }.items():
        put_namespace_file(storage, TEST_NAMESPACE, path, io.BytesIO(content))
    run = await run_task(
        task_type,
        {
            "namespaceFiles": {
                "enabled": True,
                "include": ["sql", "main.txt"],
                "exclude": ["sql/old"],
            },
            "inputFiles": {"main.txt": "from inputFiles\n"},
            "outputFiles": ["**/*"],
            "commands": ["true"],
        },
        storage_dir=storage.root,
    )
    assert run.state is State.SUCCESS, run.error
    # The input file of the same path won; only what include and exclude take came in.
    assert stored_texts(run) == {"main.txt": "from inputFiles\n", "sql/load.sql": "SELECT 1;\n"}
    assert f"namespaceFiles: copied 2 file(s) of namespace {TEST_NAMESPACE}" in run.messages


async def test_namespace_files_of_another_namespace_are_not_seen(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    put_namespace_file(storage, "company.other", "secret.sql", io.BytesIO(b"x"))
    put_namespace_file(storage, f"{TEST_NAMESPACE}.child", "child.sql", io.BytesIO(b"x"))
    run = await run_task(
        "shell",
        {"namespaceFiles": {"enabled": True}, "outputFiles": ["**/*"], "commands": ["true"]},
        storage_dir=storage.root,
    )
    assert run.state is State.SUCCESS, run.error
    assert run.outputs["outputFiles"] == {}
    assert f"namespaceFiles: copied 0 file(s) of namespace {TEST_NAMESPACE}" in run.messages


# ------------------------------------------------------------------ storage URIs in commands


@pytest.mark.parametrize("task_type", SCRIPT_TYPES)
async def test_a_storage_uri_in_the_commands_is_a_local_copy_of_its_file(
    task_type: str, tmp_path: Path
) -> None:
    # Kestra's `cat {{ outputs.t.outputFiles['a.txt'] }}`: the URI becomes a file's path.
    storage = Storage(tmp_path / "storage")
    stored_file(storage, STORED, b"from the storage\n")
    run = await run_stored(
        task_type,
        {
            "beforeCommands": [f"test -f {STORED}"],  # the same file, copied once
            **body(task_type, [f"cat {STORED}", f"echo {STORED}"]),
        },
        storage,
    )
    assert run.state is State.SUCCESS, run.error
    (copied, path) = run.messages
    assert copied == "from the storage"
    assert path.endswith("-query.jsonl") and "/.headrace-files/" in path


async def test_a_storage_uri_in_a_python_script_is_a_local_path(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "storage")
    stored_file(storage, STORED, b"42")
    run = await run_stored(
        "python", {"script": f"print(int(open('{STORED}').read()) + 1)"}, storage
    )
    assert run.state is State.SUCCESS, run.error
    assert run.messages == ["43"]


async def test_a_storage_uri_in_the_commands_that_cannot_be_read_fails_naming_it(
    tmp_path: Path,
) -> None:
    storage = Storage(tmp_path / "storage")
    other = STORED.replace("///test/", "///other/")
    stored_file(storage, other, b"not yours")
    run = await run_stored("shell", {"commands": [f"cat {other}"]}, storage)
    assert run.state is State.FAILED
    assert run.error == (
        f"commands: {other}: a file of namespace 'other'; a task of 'test' reads only its"
        " own namespace's files"
    )
    run = await run_stored("shell", {"commands": [f"cat {STORED}"]}, None)
    assert run.state is State.FAILED
    assert run.error == (
        f"commands name the storage file {STORED}, and no file storage is set up where this"
        " task runs (workers have one: HEADRACE_STORAGE_DIR)"
    )
