"""Task types described for people and tools: the registry's aliases, `headrace plugins`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from click.testing import CliRunner

from headrace.cli import cli
from headrace.connectors.base import ConnectorProperties, TaskContext
from headrace.connectors.log import LogConnector, LogProperties
from headrace.connectors.registry import ConnectorConflict, alias_table, connector_classes
from headrace.flow.flowables import PROPERTY_MODELS
from headrace.flow.loader import load_flow
from headrace.plugins import CONNECTOR, FLOWABLE, find_plugin, plugins, property_rows


class _Echo:
    Properties: ClassVar[type[ConnectorProperties]] = LogProperties
    aliases: ClassVar[tuple[str, ...]] = ("com.example.Echo", "echo.v1")

    async def run(self, properties: Any, context: TaskContext) -> dict[str, Any]:
        return {}


def test_aliases_map_to_the_type_that_declares_them() -> None:
    assert alias_table({"echo": _Echo, "log": LogConnector}) == {
        "com.example.Echo": "echo",
        "echo.v1": "echo",
        "io.kestra.plugin.core.log.Log": "log",
        "io.kestra.core.tasks.log.Log": "log",
    }


@pytest.mark.parametrize(
    "classes",
    [
        {"echo": _Echo, "other": type("Other", (_Echo,), {"aliases": ("echo.v1",)})},
        {"echo": _Echo, "echo.v1": LogConnector},  # an alias that is another type's name
    ],
)
def test_a_name_claimed_twice_is_refused_naming_both(classes: dict[str, type]) -> None:
    with pytest.raises(ConnectorConflict, match=r"'echo.v1' is claimed by two connectors"):
        alias_table(classes)


def test_a_connector_may_not_take_a_built_in_types_name() -> None:
    reserved = frozenset({"flow.pause", "io.kestra.plugin.core.flow.Pause"})
    with pytest.raises(ConnectorConflict, match=re.escape("task type 'flow.pause' is a built-in")):
        alias_table({"flow.pause": _Echo}, reserved)
    kestra = type("Kestra", (_Echo,), {"aliases": ("io.kestra.plugin.core.flow.Pause",)})
    with pytest.raises(
        ConnectorConflict, match=re.escape("claims 'io.kestra.plugin.core.flow.Pause'")
    ):
        alias_table({"echo": kestra}, reserved)


def test_two_packages_declaring_one_type_stop_the_cli_naming_both(tmp_path: Path) -> None:
    # A second installed package (its metadata is all entry points need) declares `log`.
    info = tmp_path / "other_connectors-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-connectors\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[headrace.connectors]\nlog = other.log:Log\n")
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "plugins", "list"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: task type 'log' is declared twice, by ")
    assert "other.log:Log" in result.stderr and "Traceback" not in result.stderr


def test_every_installed_type_is_described_with_the_schema_that_validates_it() -> None:
    described = {plugin.type: plugin for plugin in plugins()}
    assert set(described) == set(connector_classes()) | set(PROPERTY_MODELS)
    for name, connector_class in connector_classes().items():
        plugin = described[name]
        assert plugin.kind == CONNECTOR
        assert plugin.properties == connector_class.Properties.model_json_schema(by_alias=True)
        assert plugin.summary and "\n" not in plugin.summary
    for name, model in PROPERTY_MODELS.items():
        assert described[name].kind == FLOWABLE
        assert described[name].properties == model.model_json_schema(by_alias=True)
        assert described[name].summary  # its own docstring, not pydantic's BaseModel's


def test_kestra_names_find_the_same_type_and_load_in_flows() -> None:
    assert find_plugin("io.kestra.plugin.core.log.Log") == find_plugin("log")
    assert find_plugin("io.kestra.plugin.core.flow.Pause").type == "flow.pause"
    assert find_plugin("no.such.Type") is None
    flow = load_flow(
        "id: f\nnamespace: n\ntasks:\n"
        "  - {id: a, type: io.kestra.plugin.scripts.shell.Commands, commands: [date]}\n"
    )
    assert flow.tasks[0].type == "shell"


def test_property_rows_say_type_requirement_default_and_description() -> None:
    rows = {row.name: row for row in property_rows(find_plugin("log").properties)}
    assert rows["message"].required and rows["message"].type == "string or list of string"
    assert rows["level"].type == "one of TRACE, DEBUG, INFO, WARN, ERROR"
    assert rows["level"].default == "INFO" and not rows["level"].required
    shell = {row.name: row for row in property_rows(find_plugin("shell").properties)}
    assert shell["commands"].type == "list of string"
    assert shell["env"].type == "map of string"
    assert shell["workingDirectory"].type == "string"  # by alias, not working_directory
    outputs = find_plugin("shell").outputs
    assert outputs is not None and [row.name for row in property_rows(outputs)] == ["exitCode"]


def test_the_cli_lists_every_type_with_its_kestra_alias() -> None:
    result = CliRunner().invoke(cli, ["plugins", "list"])
    assert result.exit_code == 0, result.output
    for plugin in plugins():
        assert plugin.type in result.output
        for alias in plugin.aliases:
            assert f"alias: {alias}" in result.output
    assert f"{len(plugins())} task types" in result.output


def test_the_cli_describes_a_type_by_its_kestra_name() -> None:
    result = CliRunner().invoke(cli, ["plugins", "describe", "io.kestra.plugin.core.log.Log"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("log (connector)\nalias: io.kestra.plugin.core.log.Log\n")
    assert "  level (one of TRACE, DEBUG, INFO, WARN, ERROR, default INFO)" in result.output
    http = CliRunner().invoke(cli, ["plugins", "describe", "http.request"])
    assert "  options.followRedirects (boolean, default true)" in http.output
    assert "  message (string or list of string, required)\n      The text to log" in result.output
    as_json = CliRunner().invoke(cli, ["plugins", "describe", "shell", "--json"])
    assert orjson.loads(as_json.output) == find_plugin("shell").to_json()


def test_the_cli_refuses_an_unknown_type_clearly() -> None:
    result = CliRunner().invoke(cli, ["plugins", "describe", "lgo"])
    assert result.exit_code != 0
    assert "unknown task type 'lgo'" in str(result.exception)
