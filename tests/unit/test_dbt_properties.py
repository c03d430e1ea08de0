"""The dbt task types without dbt: their properties as flows are loaded, the command lines
they build, the failing node's reason and the outputs' size limit. dbt itself runs in
tests/integration/test_dbt_connector.py; here a stand-in executable (`dbtPath`) shows
what the task hands dbt: its words, its environment, its profiles, its signals."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

import orjson
import pytest

from headrace.connectors.base import MAX_OUTPUTS_BYTES, TaskContext
from headrace.connectors.dbt import (
    INSTALL_HINT,
    STOP_GRACE_S,
    DbtBuildProperties,
    DbtRunner,
    node_reason,
    options,
)
from headrace.expressions import render_properties
from headrace.flow.loader import load_flow
from headrace.messages import LogLevel
from headrace.services.worker.service import SHUTDOWN_GRACE_S
from headrace.states import State
from headrace.testing import run_task
from tests.unit.test_flow_loader import errors_of
from tests.unit.waiting import until

# A stand-in for dbt: prints the words it was given, one a line, the profiles.yml the task
# wrote, and the variable a profile reads its password from.
ECHO_DBT = """#!/bin/sh
printf 'word: %s\\n' "$@"
cat "$DBT_PROFILES_DIR/profiles.yml"
printf 'PG_PASSWORD=%s\\n' "$PG_PASSWORD"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A dbt project's directory (all the stand-ins need of it: its dbt_project.yml)."""
    project = tmp_path / "shop"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: shop\n")
    return project


def flow_with(task: str) -> str:
    return f"id: f\nnamespace: n\ntasks:\n  - id: dbt\n{task}"


def test_a_wrong_property_type_is_refused_when_the_flow_is_loaded() -> None:
    source = flow_with(
        "    type: dbt.build\n"
        "    projectDir: /srv/shop\n"
        "    threads: many\n"
        "    select: [orders]\n"
        "    fullRefresh: sometimes\n"
    )
    errors = sorted(errors_of(source), key=lambda error: error.line or 0)
    assert [(error.line, error.path) for error in errors] == [
        (7, "tasks[0].threads"),
        (9, "tasks[0].fullRefresh"),
    ]
    assert "integer" in errors[0].message
    assert "boolean" in errors[1].message


def test_kestra_names_load_and_expressions_wait_for_their_values() -> None:
    flow = load_flow(
        flow_with(
            "    type: io.kestra.plugin.dbt.cli.Build\n"
            "    projectDir: /srv/shop\n"
            "    thread: '{{ inputs.threads }}'\n"  # Kestra's name for `threads`
            "    fullRefresh: '{{ inputs.full }}'\n"
            "    select: tag:daily\n"  # one selector needs no list
        )
    )
    assert flow.task("dbt").properties["thread"] == "{{ inputs.threads }}"
    properties = DbtBuildProperties.model_validate(
        {"projectDir": "/srv/shop", "thread": 4, "select": "tag:daily"}
    )
    assert (properties.threads, properties.select) == (4, ["tag:daily"])


def test_commands_must_be_dbt_commands_the_task_can_run() -> None:
    def messages(commands: str) -> list[str]:
        source = flow_with(
            f"    type: dbt.cli\n    projectDir: /srv/shop\n    commands: {commands}\n"
        )
        return [f"{error.line} {error.path}: {error.message}" for error in errors_of(source)]

    [shell] = messages("['dbt deps', 'rm -rf ~']")
    assert shell.startswith("7 tasks[0].commands[1]: ")
    assert shell.endswith("is not a dbt command (each starts with `dbt`), got 'rm -rf ~'")
    [target] = messages("['dbt build --target-path=/srv/shop/target']")
    assert "sets --target-path, which the task sets itself" in target
    [quote] = messages('["dbt build --select \'orders"]')
    assert "cannot be split into words" in quote
    # An expression is checked once rendered, on the worker.
    source = flow_with("    type: dbt.cli\n    projectDir: /srv/shop\n    commands: ['{{ c }}']\n")
    assert load_flow(source).task("dbt").properties["commands"] == ["{{ c }}"]


def test_the_project_is_a_path_or_files_that_stay_inside_the_attempt() -> None:
    def messages(task: str) -> list[str]:
        return [error.message for error in errors_of(flow_with(f"    type: dbt.run\n{task}"))]

    [neither] = messages("    select: [orders]\n")
    assert (
        "give the project: `projectDir` (its path on the worker), `inputFiles`, or"
        " `namespaceFiles`" in neither
    )
    [escape] = messages("    inputFiles:\n      ../profiles.yml: x\n")
    assert "leads out of the task's working directory" in escape
    [absolute] = messages("    inputFiles:\n      /etc/dbt/profiles.yml: x\n")
    assert "is an absolute path" in absolute


def test_where_the_project_is_and_which_dbt_runs_are_checked_when_the_flow_is_loaded() -> None:
    def error(task: str) -> tuple[int | None, str, str]:
        [found] = errors_of(flow_with(f"    type: dbt.run\n{task}"))
        return found.line, found.path, found.message

    files = "    inputFiles:\n      shop/dbt_project.yml: 'name: shop'\n"
    line, path, message = error(files + "    projectDir: /srv/shop\n")
    assert (line, path) == (8, "tasks[0].projectDir")
    assert (
        "'/srv/shop' must be a directory among the inputFiles or namespaceFiles (a relative"
        " path" in message
    )
    namespace = "    namespaceFiles:\n      enabled: true\n"
    assert error(namespace + "    projectDir: ../shop\n")[1] == "tasks[0].projectDir"
    loaded = load_flow(flow_with(f"    type: dbt.run\n{namespace}    projectDir: shop\n"), "f.yaml")
    assert loaded.tasks[0].properties["projectDir"] == "shop"
    assert "among the inputFiles" in error(files + "    projectDir: shop/../..\n")[2]
    line, path, message = error("    projectDir: shop\n")
    assert (line, path) == (6, "tasks[0].projectDir")
    assert "'shop' must be an absolute path on the worker (or give the project as" in message
    line, path, message = error("    projectDir: /srv/shop\n    dbtPath: venv/bin/dbt\n")
    assert (line, path) == (7, "tasks[0].dbtPath")
    assert "'venv/bin/dbt' must be an absolute path to a dbt executable" in message
    # Values that are expressions are checked once rendered, on the worker.
    flow = load_flow(flow_with(f"    type: dbt.run\n{files}    projectDir: '{{{{ x }}}}'\n"))
    assert flow.task("dbt").properties["projectDir"] == "{{ x }}"
    load_flow(flow_with("    type: dbt.run\n    projectDir: '{{ inputs.dir }}'\n"))


async def test_a_project_or_a_dbt_that_is_not_there_fails_saying_so(tmp_path: Path) -> None:
    run = await run_task("dbt.build", {"projectDir": "shop"})  # rendered from an input
    assert run.state is State.FAILED
    assert run.error is not None and run.error.startswith("invalid property 'projectDir': ")
    assert "'shop' must be an absolute path on the worker" in run.error
    run = await run_task("dbt.test", {"projectDir": str(tmp_path)})
    assert run.error == f"projectDir {str(tmp_path)!r} holds no dbt_project.yml"
    run = await run_task(
        "dbt.cli",
        {
            "inputFiles": {"shop/dbt_project.yml": "name: shop\n"},
            "projectDir": "shop",
            "commands": ["dbt build"],
            "dbtPath": str(tmp_path / "bin" / "dbt"),
        },
    )
    assert (
        run.error
        == f"dbtPath {str(tmp_path / 'bin' / 'dbt')!r} is not an executable file: {INSTALL_HINT}"
    )
    assert "install headrace[dbt] on the workers" in INSTALL_HINT


def test_typed_properties_become_words_of_their_own_never_shell_text() -> None:
    properties = DbtBuildProperties.model_validate(
        {
            "projectDir": "/srv/shop",
            "target": "prod",
            "select": ["orders+", "tag:daily; rm -rf ~"],
            "exclude": "tag:slow",
            "vars": {"day": "2026-12-06", "limit": 3},
            "threads": 2,
            "fullRefresh": True,
            "failFast": True,
        }
    )
    assert options(properties) == [
        "--target=prod",
        "--select=orders+",
        "--select=tag:daily; rm -rf ~",
        "--exclude=tag:slow",
        '--vars={"day":"2026-12-06","limit":3}',
        "--threads=2",
        "--full-refresh",
        "--fail-fast",
    ]
    # As logged: quoted the way a shell would need it, so it can be pasted back.
    assert shlex.split(shlex.join(options(properties)))[2] == "--select=tag:daily; rm -rf ~"


async def test_a_value_that_looks_like_an_option_reaches_dbt_as_a_value(
    tmp_path: Path, shop: Path
) -> None:
    # `select: "{{ inputs.models }}"` with `--target-path /tmp/x` for models: as a word
    # of its own dbt would take it for its option. Joined to `--select=` it stays a
    # selector (tests/integration/test_dbt_connector.py has dbt's own parser read it).
    dbt = executable(tmp_path / "dbt", ECHO_DBT)
    run = await run_task(
        "dbt.build",
        {
            "projectDir": str(shop),
            "dbtPath": str(dbt),
            "select": "--target-path /tmp/x",
            "exclude": ["-e"],
            "target": "--debug",
            "selector": "--log-path=/tmp/y",
        },
    )
    assert run.state is State.SUCCESS, run.error
    words = [m.removeprefix("word: ") for m in run.messages if m.startswith("word: ")]
    assert words[words.index("build") :] == [
        "build",
        "--target=--debug",
        "--select=--target-path /tmp/x",
        "--exclude=-e",
        "--selector=--log-path=/tmp/y",
    ]


async def test_profiles_leave_env_var_to_dbt_inside_a_raw_block(tmp_path: Path, shop: Path) -> None:
    # What docs/flows.md shows: the password in `env`, read by dbt's env_var(), which the
    # flow's own expressions must not render (they would fail: no `env_var` here).
    source = flow_with(
        "    type: dbt.build\n"
        f"    projectDir: {shop}\n"
        f"    dbtPath: {executable(tmp_path / 'dbt', ECHO_DBT)}\n"
        "    env:\n"
        '      PG_PASSWORD: "{{ inputs.password }}"\n'
        "    profiles: |\n"
        "      shop:\n"
        "        outputs:\n"
        "          prod:\n"
        "            password: \"{% raw %}{{ env_var('PG_PASSWORD') }}{% endraw %}\"\n"
    )
    properties = load_flow(source).task("dbt").properties
    password = 'quo"te \\ {{ x }} {% y %}'  # what would break YAML or dbt's Jinja
    rendered = render_properties(properties, {"inputs": {"password": password}})
    run = await run_task("dbt.build", rendered)
    assert run.state is State.SUCCESS, run.error
    assert "    prod:" in run.messages
    assert "      password: \"{{ env_var('PG_PASSWORD') }}\"" in run.messages
    assert f"PG_PASSWORD={password}" in run.messages  # dbt's env_var() reads it as is


async def test_a_kill_gives_dbt_the_time_to_cancel_its_queries(tmp_path: Path, shop: Path) -> None:
    # dbt's Ctrl-C cancels its queries on the warehouse, which takes a round trip each:
    # this one takes longer than the 2 s other programs get before SIGKILL.
    started, cleaned = tmp_path / "started", tmp_path / "cleaned"
    slow_to_stop = executable(
        tmp_path / "dbt",
        "#!/bin/sh\n"
        "trap 'sleep 2.5; echo done > \"$CLEANED\"; exit 130' INT\n"
        'touch "$STARTED"\n'
        "sleep 60 & wait\n",
    )
    env = {"STARTED": str(started), "CLEANED": str(cleaned)}
    task = asyncio.create_task(
        run_task("dbt.run", {"projectDir": str(shop), "dbtPath": str(slow_to_stop), "env": env})
    )
    await until(started.exists, "the stand-in to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.read_text() == "done\n"  # it was not killed before it was done


def test_dbt_stops_within_the_workers_shutdown_grace_period() -> None:
    assert 2.0 < STOP_GRACE_S <= SHUTDOWN_GRACE_S - 2.0


def test_a_failed_node_reads_as_one_line_of_dbt_reasons() -> None:
    database_error = {
        "unique_id": "model.shop.orders",
        "status": "error",
        "message": "Database Error in model orders (models/orders.sql)\n"
        '  relation "raw.x" does not exist\n'
        "  LINE 3: select * from raw.x\n"
        "                        ^\n"
        "  compiled code at /tmp/a/target/run/shop/models/orders.sql",
    }
    assert node_reason(database_error) == (
        'Database Error: relation "raw.x" does not exist; LINE 3: select * from raw.x'
    )
    failed_test = {"status": "fail", "message": "Got 3 results, configured to fail if != 0"}
    assert node_reason(failed_test) == "Got 3 results, configured to fail if != 0"
    assert node_reason({"status": "runtime error", "message": None}) == "runtime error"


async def test_thousands_of_nodes_are_cut_to_fit_the_outputs(tmp_path: Path) -> None:
    logs: list[tuple[LogLevel, str]] = []

    async def sink(level: LogLevel, message: str) -> None:
        logs.append((level, message))

    context = TaskContext("e", "n", "f", "t", "tr", 1, sink, tmp_path)
    runner = DbtRunner(DbtBuildProperties.model_validate({"projectDir": "/srv/shop"}), context)
    node: dict[str, Any] = {
        "status": "success",
        "execution_time": 0.5,
        "adapter_response": {"rows_affected": 7},
        "message": "SELECT 7",
    }
    runner.results = [{**node, "unique_id": f"model.shop.m{i}"} for i in range(5000)]
    runner.results[-1]["status"] = "skipped"
    outputs = await runner.outputs()
    assert len(orjson.dumps(outputs)) < MAX_OUTPUTS_BYTES
    listed = len(outputs["results"])
    assert 0 < listed < 5000 and outputs["resultsOmitted"] == 5000 - listed
    assert outputs["results"][0] == {
        "uniqueId": "model.shop.m0",
        "status": "success",
        "executionTime": 0.5,
        "message": "SELECT 7",
        "rowsAffected": 7,
        "failures": None,
    }
    assert outputs["summary"]["success"] == 4999 and outputs["summary"]["skipped"] == 1
    assert logs == [
        (
            LogLevel.WARN,
            f"outputs list the first {listed} of 5000 results (the outputs hold at most"
            " 256 KiB); the log has a line for each",
        )
    ]
