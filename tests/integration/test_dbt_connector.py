"""dbt.build and dbt.cli running dbt-core for real against the session's PostgreSQL.

The project is tests/fixtures/dbt_project: a source table this module creates, a view
and a table built on it, two schema tests, a model that fails on purpose (`tag:broken`)
and one that waits a minute (`tag:slow`). dbt costs seconds to start, so each test runs
it once or twice and checks all it can on that run.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson
import pytest

from headrace.connectors.dbt import OWN_DIRECTORY, DbtBuildProperties, options
from headrace.messages import LogLevel
from headrace.namespace_storage import put_namespace_file
from headrace.states import State
from headrace.storage import Storage
from headrace.testing import TEST_NAMESPACE, TaskRun, run_task

FIXTURE = Path(__file__).parent.parent / "fixtures" / "dbt_project"
PROJECT = "headrace_test"  # the fixture's dbt project name
DEADLINE_S = 60.0  # dbt takes seconds to start, more on a busy CI machine
POLL_S = 0.05
RUN_TIMEOUT = timedelta(minutes=3)  # a hung dbt fails its test instead of blocking CI


@dataclass(frozen=True)
class Warehouse:
    url: str
    raw: str  # the schema of the source table `orders`
    profiles_host: dict[str, Any]  # how dbt reaches the database, for profiles.yml

    def profiles(self, schema: str) -> str:
        """profiles.yml for the fixture's profile, building into `schema`."""
        fields = {**self.profiles_host, "schema": schema, "threads": 1}
        lines = "".join(f"      {key}: {value!r}\n" for key, value in fields.items())
        return f"{PROJECT}:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n{lines}"


@pytest.fixture(scope="module")
async def warehouse(database_url: str) -> AsyncIterator[Warehouse]:
    raw = f"raw_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            f"CREATE SCHEMA {raw};"
            f" CREATE TABLE {raw}.orders (id int, customer text, amount int);"
            f" INSERT INTO {raw}.orders VALUES (1, 'ann', 5), (2, 'ann', 7), (3, 'bob', 3)"
        )
    finally:
        await connection.close()
    url = urlsplit(database_url)
    host = {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "user": unquote(url.username or "postgres"),
        "password": unquote(url.password or ""),  # trust authentication on the test server
        "dbname": url.path.lstrip("/"),
    }
    yield Warehouse(database_url, raw, host)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the fixture project: the tests check that dbt wrote nothing into it."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "project"))


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def unique_schema() -> str:
    return f"dbt_{uuid.uuid4().hex[:8]}"


async def fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await connection.fetch(sql)]
    finally:
        await connection.close()


def statuses(run: TaskRun) -> list[tuple[str, str, int | None]]:
    """(node, status, rows affected) in the order of the outputs; tests without their hash."""
    found = []
    for result in run.outputs["results"]:
        node = result["uniqueId"]
        if node.startswith("test."):
            node = node.rsplit(".", 1)[0]  # test.project.name.81cfe2fe64
        found.append((node, result["status"], result["rowsAffected"]))
    return found


TESTS_PASSED = [
    (f"test.{PROJECT}.not_null_stg_orders_order_id", "pass", 1),
    (f"test.{PROJECT}.unique_stg_orders_order_id", "pass", 1),
]


async def test_build_creates_the_models_and_reports_each_node(
    warehouse: Warehouse, project: Path
) -> None:
    schema, before = unique_schema(), listing(project)
    run = await run_task(
        "dbt.build",
        {
            "projectDir": str(project),
            "profiles": warehouse.profiles(schema),
            "exclude": ["tag:broken", "tag:slow"],
            "vars": {"min_total": 10},
            "threads": 1,
            "env": {"HEADRACE_TEST_RAW_SCHEMA": warehouse.raw},
        },
        timeout=RUN_TIMEOUT,
    )
    assert run.state is State.SUCCESS, run.error
    # The tables are real: the view reads the source, the table keeps totals >= min_total.
    assert await fetch(warehouse.url, f"SELECT * FROM {schema}.customer_totals") == [("ann", 12)]
    count = await fetch(warehouse.url, f"SELECT count(*) FROM {schema}.stg_orders")
    assert count == [(3,)]
    # Each node in the DAG's order, with its status and the rows the database reported
    # (-1: a view has none).
    nodes = statuses(run)
    assert nodes[0] == (f"model.{PROJECT}.stg_orders", "success", -1)
    assert sorted(nodes[1:3]) == TESTS_PASSED
    assert nodes[3:] == [(f"model.{PROJECT}.customer_totals", "success", 1)]
    totals = run.outputs["results"][-1]
    assert totals["message"] == "SELECT 1" and totals["executionTime"] > 0
    summary = run.outputs["summary"]
    assert (summary["success"], summary["pass"], sum(summary.values())) == (2, 2, 4)
    assert (run.outputs["exitCode"], run.outputs["resultsOmitted"]) == (0, 0)
    # dbt's own lines, as its console shows them, then one line per node.
    messages = run.messages
    assert messages[0] == (
        "dbt build --exclude=tag:broken --exclude=tag:slow '--vars={\"min_total\":10}' --threads=1"
    )
    assert any(
        m.startswith(f"1 of 4 OK created sql view model {schema}.stg_orders ") for m in messages
    )
    assert "Completed successfully" in messages
    assert any(m.startswith(f"model.{PROJECT}.customer_totals: success in ") for m in messages)
    assert messages[-1].endswith(", 1 row (SELECT 1)")
    assert all(level is not LogLevel.ERROR for level, _ in run.logs)
    assert listing(project) == before  # no target/, no logs/: they went to the attempt


async def test_cli_runs_its_commands_in_order_on_input_files(warehouse: Warehouse) -> None:
    schema = unique_schema()
    files = {
        f"shop/{path.relative_to(FIXTURE)}": path.read_text()
        for path in FIXTURE.rglob("*")
        if path.is_file()
    }
    run = await run_task(
        "io.kestra.plugin.dbt.cli.DbtCLI",
        {
            "inputFiles": files,
            "projectDir": "shop",
            "profiles": warehouse.profiles(schema),
            "env": {"HEADRACE_TEST_RAW_SCHEMA": warehouse.raw},
            "commands": ["dbt run --select stg_orders", "dbt test --select stg_orders"],
        },
        timeout=RUN_TIMEOUT,
    )
    assert run.state is State.SUCCESS, run.error
    first = run.messages.index("command 1 of 2: dbt run --select stg_orders")
    second = run.messages.index("command 2 of 2: dbt test --select stg_orders")
    assert first < second
    ran = run.messages[first:second]
    assert any(m.startswith("1 of 1 OK created sql view model") for m in ran)
    assert sum(m.startswith("Done. PASS=") for m in run.messages) == 2
    # Results of both commands, in order: the model, then its tests.
    nodes = statuses(run)
    assert nodes[0] == (f"model.{PROJECT}.stg_orders", "success", -1)
    assert sorted(nodes[1:]) == TESTS_PASSED
    assert (run.outputs["summary"]["success"], run.outputs["summary"]["pass"]) == (1, 2)
    assert await fetch(warehouse.url, f"SELECT count(*) FROM {schema}.stg_orders") == [(3,)]


async def test_a_project_kept_as_namespace_files_is_copied_and_built(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    """The project as `headrace namespace files sync` leaves it: in the storage, under
    the flow's namespace; `namespaceFiles` copies it into the attempt's directory."""
    storage = Storage(tmp_path / "storage")
    for path in FIXTURE.rglob("*"):
        if path.is_file():
            with path.open("rb") as source:
                name = f"shop/{path.relative_to(FIXTURE)}"
                put_namespace_file(storage, TEST_NAMESPACE, name, source)
    put_namespace_file(storage, TEST_NAMESPACE, "notes/readme.txt", io.BytesIO(b"not dbt"))
    schema = unique_schema()
    run = await run_task(
        "dbt.run",
        {
            "namespaceFiles": {"enabled": True, "include": ["shop"]},
            "projectDir": "shop",
            "profiles": warehouse.profiles(schema),
            "select": ["stg_orders"],
            "env": {"HEADRACE_TEST_RAW_SCHEMA": warehouse.raw},
        },
        timeout=RUN_TIMEOUT,
        storage_dir=storage.root,
    )
    assert run.state is State.SUCCESS, run.error
    copied = sum(1 for path in FIXTURE.rglob("*") if path.is_file())
    assert f"namespaceFiles: copied {copied} file(s) of namespace {TEST_NAMESPACE}" in run.messages
    assert statuses(run) == [(f"model.{PROJECT}.stg_orders", "success", -1)]
    assert await fetch(warehouse.url, f"SELECT count(*) FROM {schema}.stg_orders") == [(3,)]
    # Without the files there, the task says what is missing.
    empty = await run_task(
        "dbt.run",
        {"namespaceFiles": {"enabled": True, "include": ["shop"]}, "projectDir": "shop"},
        storage_dir=tmp_path / "empty",
    )
    assert empty.error == "namespaceFiles include 'shop' matches no file of the namespace"


async def test_a_failing_model_fails_with_its_error_and_stops_the_commands(
    warehouse: Warehouse, project: Path
) -> None:
    schema, before = unique_schema(), listing(project)
    run = await run_task(
        "dbt.cli",
        {
            "projectDir": str(project),
            "profiles": warehouse.profiles(schema),
            "env": {"HEADRACE_TEST_RAW_SCHEMA": warehouse.raw},
            "commands": ["dbt build --select tag:broken", "dbt build --select stg_orders"],
        },
        timeout=RUN_TIMEOUT,
    )
    assert run.state is State.FAILED
    error = run.error or ""
    assert error.startswith(
        f"command 1 of 2: model.{PROJECT}.broken: Database Error: relation"
        f' "{warehouse.raw}.missing" does not exist; LINE '
    )
    assert error.endswith(f": select * from {warehouse.raw}.missing")
    assert any(
        level is LogLevel.ERROR and message.startswith("1 of 1 ERROR creating sql view model")
        for level, message in run.logs
    )
    # The node's line among the results' lines, with the same reason.
    reason = error.removeprefix(f"command 1 of 2: model.{PROJECT}.broken: ")
    [node_line] = [
        (level, message)
        for level, message in run.logs
        if message.startswith(f"model.{PROJECT}.broken: error in ")
    ]
    assert node_line[0] is LogLevel.ERROR and node_line[1].endswith(f"s: {reason}")
    assert not any(m.startswith("command 2 of 2") for m in run.messages)
    # dbt's compiled code is in the attempt's directory, not in the project.
    compiled = next(m for m in run.messages if "compiled code at " in m).split("compiled code at ")
    where = Path(compiled[-1].strip())
    assert where.parts[-3:] == (PROJECT, "models", "broken.sql")
    attempts = str(Path(tempfile.gettempdir()) / "headrace-attempt-")
    assert str(where).startswith(attempts) and f"/{OWN_DIRECTORY}/target/" in str(where)
    assert listing(project) == before
    assert await fetch(warehouse.url, f"SELECT to_regclass('{schema}.stg_orders')") == [(None,)]


def test_dbt_reads_a_value_that_looks_like_an_option_as_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt's own parser reads the words the typed properties become (no dbt run: its
    command-line parser alone, as the task's dbt would read them)."""
    from dbt.cli.main import cli  # seconds to import: only this test needs it

    monkeypatch.setenv("DBT_PROFILES_DIR", str(tmp_path))  # dbt checks they exist
    monkeypatch.setenv("DBT_PROJECT_DIR", str(tmp_path))
    properties = DbtBuildProperties.model_validate(
        {
            "projectDir": "/srv/shop",
            "select": ["--target-path /tmp/x", "orders+"],  # from `{{ inputs.models }}`
            "exclude": "-e",
            "target": "--debug",
            "selector": "--log-path=/tmp/y",
            "vars": {"day": "a=b"},
        }
    )
    read = cli.commands["build"].make_context("build", options(properties)).params
    assert read["select"] == ("--target-path", "/tmp/x", "orders+")  # selectors, all three
    assert (read["exclude"], read["target"], read["selector"]) == (
        ("-e",),
        "--debug",
        "--log-path=/tmp/y",
    )
    assert read["vars"] == {"day": "a=b"}
    # None of the options the values look like was set.
    assert (read["target_path"], read["log_path"], read["debug"]) == (None, None, False)


def dbt_processes(marker: str) -> list[int]:
    """Ids of the running processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if marker.encode() in command_line:
            found.append(int(entry.name))
    return found


def live_processes_of_group(group: int) -> list[int]:
    """Ids of the processes of process group `group` that are not zombies."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _parent, process_group = stat.rsplit(")", 1)[1].split()[:3]
        if int(process_group) == group and state != "Z":
            found.append(int(entry.name))
    return found


async def test_a_kill_interrupts_dbt_which_cancels_its_query(
    warehouse: Warehouse, project: Path
) -> None:
    schema = unique_schema()
    marker = {"run": schema}  # unused by the project: on dbt's command line to find it by
    running = asyncio.create_task(
        run_task(
            "dbt.build",
            {
                "projectDir": str(project),
                "profiles": warehouse.profiles(schema),
                "select": ["tag:slow"],
                "vars": marker,
                "threads": 1,
            },
            timeout=RUN_TIMEOUT,
        )
    )
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()"
    )
    deadline = time.monotonic() + DEADLINE_S
    while (await fetch(warehouse.url, sleeping))[0][0] == 0:
        assert not running.done(), running.result().error
        assert time.monotonic() < deadline, "dbt never started the slow model"
        await asyncio.sleep(POLL_S)
    [dbt] = dbt_processes(f"--vars={orjson.dumps(marker).decode()}")
    group = os.getpgid(dbt)
    assert group == dbt  # dbt leads its own process group

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    # dbt and its helper (multiprocessing's resource tracker) are gone; a process that
    # is dead but not yet reaped by its new parent (init) is a zombie, not a survivor.
    deadline = time.monotonic() + 5
    while survivors := live_processes_of_group(group):
        assert time.monotonic() < deadline, f"processes of dbt's group still run: {survivors}"
        await asyncio.sleep(POLL_S)
    # dbt cancelled its query on the way out: the server is not left sleeping a minute.
    deadline = time.monotonic() + 10
    while (await fetch(warehouse.url, sleeping))[0][0] != 0:
        assert time.monotonic() < deadline, "the slow model's query still runs"
        await asyncio.sleep(POLL_S)
    assert await fetch(warehouse.url, f"SELECT to_regclass('{schema}.slow')") == [(None,)]
