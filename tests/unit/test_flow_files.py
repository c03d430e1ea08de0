"""Flow files read from disk: UTF-8 whatever the locale, unreadable files named, dbt
projects in a flows folder left to dbt."""

from __future__ import annotations

from pathlib import Path

from headrace.flow.errors import FlowValidationError
from headrace.flow_files import load_folder

FLOW = 'id: {id}\nnamespace: demo\ntasks:\n  - {{id: hi, type: log, message: "{message}"}}\n'


def test_flow_files_are_read_as_utf8(tmp_path: Path) -> None:
    (tmp_path / "greet.yaml").write_bytes(FLOW.format(id="greet", message="héllo ✓").encode())
    files, errors = load_folder([tmp_path])
    assert errors == []
    [item] = files
    assert "héllo ✓" in item.source and item.flow.id == "greet"


def test_unreadable_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(FLOW.format(id="old", message="caf\xe9").encode("latin-1"))
    missing = tmp_path / "missing.yml"
    (tmp_path / "fine.yaml").write_text(FLOW.format(id="fine", message="ok"), encoding="utf-8")
    files, errors = load_folder([tmp_path, missing])
    assert [f.flow.id for f in files] == ["fine"]
    assert all(isinstance(e, FlowValidationError) for e in errors)
    messages = sorted(str(e) for e in errors)
    assert len(messages) == 2
    assert str(latin1) in messages[0] and "cannot read the file" in messages[0]
    assert str(missing) in messages[1] and "cannot read the file" in messages[1]


def test_a_dbt_project_in_a_flows_folder_is_not_read_as_flows(tmp_path: Path) -> None:
    (tmp_path / "load.yaml").write_text(FLOW.format(id="load", message="ok"))
    project = tmp_path / "transform" / "shop"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: shop\nprofile: warehouse\n")
    (project / "models" / "schema.yml").write_text("version: 2\nmodels: []\n")
    (tmp_path / "transform" / "later.yml").write_text(FLOW.format(id="later", message="ok"))
    files, errors = load_folder([tmp_path])
    assert errors == []
    assert sorted(f.flow.id for f in files) == ["later", "load"]
    # Named on its own, a dbt file is read as a flow and refused like any other.
    _, errors = load_folder([project / "dbt_project.yml"])
    assert len(errors) == 1 and "dbt_project.yml" in str(errors[0])


def test_the_cli_validates_with_the_gateways_limits(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from headrace.cli import cli
    from headrace.flow.limits import MAX_DEPTH, MAX_FLOW_BYTES

    deep = FLOW.format(id="deep", message="hi") + "variables: " + "[" * 5_000 + "]" * 5_000
    (tmp_path / "deep.yaml").write_text(deep, encoding="utf-8")
    big = FLOW.format(id="big", message="x" * MAX_FLOW_BYTES)
    (tmp_path / "big.yaml").write_text(big, encoding="utf-8")
    result = CliRunner().invoke(cli, ["flow", "validate", str(tmp_path)])
    assert result.exit_code != 0
    assert f"deep.yaml:5:{MAX_DEPTH + 11}: the document nests deeper than {MAX_DEPTH}" in (
        result.output
    )
    assert f"big.yaml: the flow is {len(big)} bytes, over the {MAX_FLOW_BYTES}" in result.output
