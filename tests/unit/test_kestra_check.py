"""`headrace kestra check`: a verdict per Kestra flow file, every reason at its line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from headrace.cli import cli

RUNS = """id: hello
namespace: company.team
tasks:
  - id: hi
    type: io.kestra.plugin.core.log.Log
    message: hi
"""
WARNS = """id: warned
namespace: company.team
tasks:
  - id: hi
    type: io.kestra.plugin.core.log.Log
    message: hi
    workerGroup:
      key: gpu
"""
REFUSED = """id: cloud
namespace: company.team
tasks:
  - id: upload
    type: io.kestra.plugin.aws.s3.Upload
    from: data.csv
"""


def folder(tmp_path: Path) -> Path:
    (tmp_path / "flows" / "sub").mkdir(parents=True)
    (tmp_path / "flows" / "a_runs.yml").write_text(RUNS)
    (tmp_path / "flows" / "sub" / "b_warns.yaml").write_text(WARNS)
    (tmp_path / "flows" / "c_refused.yml").write_text(REFUSED)
    (tmp_path / "flows" / "notes.txt").write_text("not a flow")
    return tmp_path / "flows"


def test_each_file_gets_a_verdict_and_reasons_at_their_lines(tmp_path: Path) -> None:
    flows = folder(tmp_path)
    result = CliRunner().invoke(cli, ["kestra", "check", str(flows)])
    assert result.exit_code == 1  # a file is refused
    lines = result.output.splitlines()
    assert lines[0] == f"{flows}/a_runs.yml: runs as is"
    assert lines[1] == f"{flows}/c_refused.yml: refused"
    assert lines[2].startswith(
        f"  {flows}/c_refused.yml:5:11: tasks[0].type: unknown task type"
        " 'io.kestra.plugin.aws.s3.Upload'"
    )
    assert "`headrace plugins list`" in lines[2] and "known types" not in lines[2]
    assert lines[3] == f"{flows}/sub/b_warns.yaml: runs with warnings"
    assert lines[4].startswith(f"  {flows}/sub/b_warns.yaml:7:5: tasks[0].workerGroup:")
    assert lines[-1] == "3 flow files: 1 runs as is, 1 runs with warnings, 1 refused"
    assert "Traceback" not in result.output


def test_a_folder_that_all_runs_exits_zero_and_json_lists_every_file(tmp_path: Path) -> None:
    flows = folder(tmp_path)
    (flows / "c_refused.yml").unlink()
    result = CliRunner().invoke(cli, ["kestra", "check", str(flows), "-o", "json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert [(f["verdict"], f["flow"]["id"]) for f in answer["files"]] == [
        ("AS_IS", "hello"),
        ("WARNINGS", "warned"),
    ]
    (problem,) = answer["files"][1]["problems"]
    assert (problem["path"], problem["line"], problem["column"]) == ("tasks[0].workerGroup", 7, 5)
    assert problem["severity"] == "warning"
    assert problem["message"].endswith("(headrace has no worker groups)")
    assert answer["counts"] == {"AS_IS": 1, "WARNINGS": 1, "REFUSED": 0, "NOT_A_FLOW": 0}
    assert answer["summary"] == "2 flow files: 1 runs as is, 1 runs with warnings, 0 refused"


def test_the_same_flow_in_two_files_refuses_the_second(tmp_path: Path) -> None:
    (tmp_path / "one.yml").write_text(RUNS)
    (tmp_path / "two.yml").write_text(RUNS)
    result = CliRunner().invoke(cli, ["kestra", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}/two.yml: refused" in result.output
    assert f"flow company.team/hello is also in {tmp_path}/one.yml" in result.output


def test_invalid_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("id: x\nnamespace: a\ntasks: [\n")
    result = CliRunner().invoke(cli, ["kestra", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}/broken.yml: refused" in result.output
    assert (
        f"{tmp_path}/broken.yml:4" in result.output or f"{tmp_path}/broken.yml:3" in result.output
    )


def test_the_migration_guide_names_every_kestra_core_type_headrace_runs_or_refuses() -> None:
    """docs/kestra.md keeps up with the aliases and with the refused core types."""
    from headrace.flow.kestra_types import NOT_RUN
    from headrace.flow.model import task_type_aliases

    guide = (Path(__file__).resolve().parents[2] / "docs" / "kestra.md").read_text()
    core = [name for name in task_type_aliases() if name.startswith("io.kestra.plugin.core.")]
    missing = [
        name
        for name in [*core, *NOT_RUN]
        if name not in guide
        and f"…{name.rsplit('.', 1)[-1]}" not in guide
        and f"…{'.'.join(name.rsplit('.', 2)[-2:])}" not in guide
        and f"{name.rsplit('.', 1)[0]}.*" not in guide
    ]
    assert missing == []


def test_flow_validate_prints_each_warning_with_its_line(tmp_path: Path) -> None:
    flows = folder(tmp_path)
    (flows / "c_refused.yml").unlink()
    result = CliRunner().invoke(cli, ["flow", "validate", str(flows)])
    assert result.exit_code == 0, result.output
    assert f"warning: {flows}/sub/b_warns.yaml:7:5: tasks[0].workerGroup:" in result.stderr
    assert "2 flow file(s) valid" in result.stdout


def test_a_repositorys_other_yaml_and_hidden_folders_are_not_flows(tmp_path: Path) -> None:
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {}\n")
    (tmp_path / "docker-compose.yml").write_text("services:\n  db:\n    image: postgres\n")
    (tmp_path / "hello.yml").write_text(RUNS)
    result = CliRunner().invoke(cli, ["kestra", "check", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path}/docker-compose.yml: skipped: not a flow" in result.output
    assert "ci.yml" not in result.output
    assert result.output.splitlines()[-1] == (
        "1 flow file: 1 runs as is, 0 run with warnings, 0 refused (1 other YAML file(s) skipped)"
    )
