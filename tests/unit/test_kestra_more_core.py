"""Kestra's `debug.Echo`, `execution.Assert` and the `storage` tasks (`Write`, `Size`,
`Concat`), as a worker runs them."""

from __future__ import annotations

from pathlib import Path

from headrace.messages import LogLevel
from headrace.states import State
from headrace.testing import TEST_NAMESPACE, run_task


async def test_echo_logs_its_format_at_its_level() -> None:
    run = await run_task("io.kestra.plugin.core.debug.Echo", {"format": "hi", "level": "WARN"})
    assert (run.state, run.logs) == (State.SUCCESS, [(LogLevel.WARN, "hi")])


async def test_assert_succeeds_when_every_condition_is_true() -> None:
    run = await run_task(
        "io.kestra.plugin.core.execution.Assert", {"conditions": ["true", 1, "ok"]}
    )
    assert (run.state, run.logs) == (State.SUCCESS, [])


async def test_assert_fails_naming_each_false_condition_and_the_error_message() -> None:
    run = await run_task(
        "io.kestra.plugin.core.execution.Assert",
        {"conditions": ["true", "False", "", "0"], "errorMessage": "inputs are wrong"},
    )
    assert run.state is State.FAILED
    assert run.error == "3 assertions failed!\ninputs are wrong"
    assert [level for level, _ in run.logs] == [LogLevel.ERROR] * 3
    assert run.messages[0] == "assertion 2 failed: rendered 'False'"


async def test_write_stores_content_and_size_and_concat_read_it(tmp_path: Path) -> None:
    first = await run_task(
        "io.kestra.plugin.core.storage.Write",
        {"content": "hello", "extension": ".txt"},
        storage_dir=tmp_path,
    )
    assert first.state is State.SUCCESS, first.error
    uri = first.outputs["uri"]
    assert uri.startswith("headrace:///") and uri.endswith("/content.txt")
    assert first.read_file(uri) == b"hello"

    size = await run_task("io.kestra.plugin.core.storage.Size", {"uri": uri}, storage_dir=tmp_path)
    assert (size.state, size.outputs) == (State.SUCCESS, {"size": 5})

    joined = await run_task(
        "io.kestra.plugin.core.storage.Concat",
        {"files": [uri, uri], "separator": "\n", "extension": "csv"},
        storage_dir=tmp_path,
    )
    assert joined.state is State.SUCCESS, joined.error
    assert joined.outputs["uri"].endswith("/concat.csv")
    assert joined.read_file(joined.outputs["uri"]) == b"hello\nhello"


async def test_a_missing_file_or_a_bad_extension_fails_with_a_reason(tmp_path: Path) -> None:
    base = "headrace:///{}/flow/executions/e1/tasks/t/r/nothing.txt"
    missing = await run_task(
        "storage.size", {"uri": base.format(TEST_NAMESPACE)}, storage_dir=tmp_path
    )
    assert missing.state is State.FAILED
    assert "nothing.txt" in (missing.error or "") and "namespace" not in (missing.error or "")
    elsewhere = await run_task("storage.size", {"uri": base.format("other")}, storage_dir=tmp_path)
    assert "reads only its own namespace's files" in (elsewhere.error or "")
    bad = await run_task(
        "storage.write", {"content": "x", "extension": "../up"}, storage_dir=tmp_path
    )
    assert bad.state is State.FAILED and "not a file extension" in (bad.error or "")


async def test_write_masks_the_workers_secrets_in_what_it_stores(tmp_path: Path) -> None:
    run = await run_task(
        "storage.write",
        {"content": "token=s3cr3t-value"},
        secrets={"TOKEN": "s3cr3t-value"},
        storage_dir=tmp_path,
    )
    assert run.read_file(run.outputs["uri"]) == b"token=******"
