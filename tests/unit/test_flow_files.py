"""Flow files read from disk: UTF-8 whatever the locale, unreadable files named, dbt
projects in a flows folder left to dbt; and how `flow apply` prints the gateway's plan
and errors."""

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


def test_an_unreadable_file_stops_apply_before_the_server_is_asked(tmp_path: Path) -> None:
    from headrace.api_client import ApiClient
    from headrace.flow_files import InvalidFlowFiles, apply_folder

    (tmp_path / "fine.yaml").write_text(FLOW.format(id="fine", message="ok"))
    (tmp_path / "latin1.yaml").write_bytes(b"id: caf\xe9\n")
    nowhere = ApiClient("http://127.0.0.1:9", token="")  # a request would fail otherwise
    try:
        apply_folder(nowhere, [tmp_path], dry_run=False, prune=False, echo=print)
    except InvalidFlowFiles as exc:
        assert str(exc) == "1 of 2 flow file(s) unreadable: nothing applied"
        assert len(exc.errors) == 1 and "latin1.yaml" in exc.errors[0]
    else:
        raise AssertionError("an unreadable file was applied")


def test_bulk_errors_print_as_file_line_column_field_reason() -> None:
    from headrace.flow_files import format_error

    error = {
        "file": "flows/etl.yaml",
        "path": "tasks[1].type",
        "line": 12,
        "column": 11,
        "message": "unknown task type 'pyhton'",
        "hint": "python",
    }
    assert format_error(error) == (
        "flows/etl.yaml:12:11: tasks[1].type: unknown task type 'pyhton' (hint: python)"
    )
    no_place = {**error, "line": None, "column": None, "path": "", "hint": None}
    assert format_error(no_place) == "flows/etl.yaml: unknown task type 'pyhton'"


def test_the_plan_marks_each_action_and_shows_each_update_as_a_diff() -> None:
    from headrace.flow_diff import unified_diff
    from headrace.flow_files import plan_lines

    diff = unified_diff("a: 1\n", "a: 2\n", "ns/f revision 3", "f.yaml")
    answer = {
        "dryRun": False,
        "flows": [
            {"namespace": "ns", "id": "f", "action": "updated", "file": "f.yaml",
             "fromRevision": 3, "revision": 4, "diff": diff},
            {"namespace": "ns", "id": "g", "action": "created", "file": "g.yaml",
             "fromRevision": None, "revision": 1},
            {"namespace": "ns", "id": "h", "action": "deleted", "fromRevision": 2, "revision": 3},
        ],
        "summary": {"created": 1, "updated": 1, "unchanged": 0, "deleted": 1},
    }  # fmt: skip
    assert plan_lines(answer) == [
        "\x1b[33m~ updated   ns/f revision 4 (was 3)  (f.yaml)\x1b[0m",
        "    \x1b[1m--- ns/f revision 3\x1b[0m",
        "    \x1b[1m+++ f.yaml\x1b[0m",
        "    \x1b[36m@@ -1 +1 @@\x1b[0m",
        "    \x1b[31m-a: 1\x1b[0m",
        "    \x1b[32m+a: 2\x1b[0m",
        "\x1b[32m+ created   ns/g revision 1  (g.yaml)\x1b[0m",
        "\x1b[31m- deleted   ns/h (was revision 2)\x1b[0m",
        "2 applied (1 created, 1 updated), 0 unchanged, 1 deleted",
    ]


def test_a_diff_says_when_a_source_lacks_its_last_newline() -> None:
    from headrace.flow_diff import unified_diff

    assert unified_diff("a\nb\n", "a\nb", "old", "new") == (
        "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n"
    )
    assert unified_diff("same\n", "same\n", "old", "new") == ""
