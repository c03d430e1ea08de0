"""The dbt task types without dbt: their properties as flows are loaded, the command lines
they build, the failing node's reason and the outputs' size limit. dbt itself runs in
tests/integration/test_dbt_connector.py."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import orjson

from headrace.connectors.base import TaskContext
from headrace.connectors.dbt import (
    INSTALL_HINT,
    DbtBuildProperties,
    DbtRunner,
    node_reason,
    options,
)
from headrace.flow.loader import load_flow
from headrace.messages import LogLevel
from headrace.states import State
from headrace.testing import run_task
from tests.unit.test_flow_loader import errors_of

MAX_OUTPUTS_BYTES = 256 * 1024  # the worker's limit (services.worker.runner)


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
    assert "give the project: `projectDir` (its path on the worker) or `inputFiles`" in neither
    [escape] = messages("    inputFiles:\n      ../profiles.yml: x\n")
    assert "leads out of the task's working directory" in escape
    [absolute] = messages("    inputFiles:\n      /etc/dbt/profiles.yml: x\n")
    assert "is an absolute path" in absolute


async def test_a_project_or_a_dbt_that_is_not_there_fails_saying_so(tmp_path: Path) -> None:
    run = await run_task("dbt.build", {"projectDir": "shop"})
    assert run.state is State.FAILED
    assert run.error == (
        "projectDir 'shop' must be an absolute path on the worker (or give the project as"
        " inputFiles)"
    )
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


def test_typed_properties_become_separate_words_never_shell_text() -> None:
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
        "--target",
        "prod",
        "--select",
        "orders+",
        "tag:daily; rm -rf ~",
        "--exclude",
        "tag:slow",
        "--vars",
        '{"day":"2026-12-06","limit":3}',
        "--threads",
        "2",
        "--full-refresh",
        "--fail-fast",
    ]
    # As logged: quoted the way a shell would need it, so it can be pasted back.
    assert shlex.split(shlex.join(options(properties)))[4] == "tag:daily; rm -rf ~"


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
