"""`headrace.testing.run_task`: a connector run as a worker runs it, without Kafka; and
how `TestWorker` fails when it has no broker (its runs: tests/integration/test_testing_worker.py)."""

from __future__ import annotations

import asyncio
import gc
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from headrace.broker import free_port
from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.states import State
from headrace.storage import StorageError
from headrace.testing import KitError, TestWorker, run_task, secret


class WaitProperties(ConnectorProperties):
    token: str
    seconds: float = 0.0


class Waiting:
    """Logs its token, waits, and remembers whether it was cancelled."""

    Properties = WaitProperties
    uses_workdir = False
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def run(self, properties: WaitProperties, context: TaskContext) -> dict[str, Any]:
        await context.info(f"token is {properties.token}")
        Waiting.started.set()
        try:
            await asyncio.sleep(properties.seconds)
        except asyncio.CancelledError:
            Waiting.cancelled.set()  # where a connector stops its remote job
            raise
        if properties.seconds < 0:
            raise TaskFailed("no negative waits")
        return {"echo": properties.token}


async def test_an_installed_type_runs_by_name_or_alias() -> None:
    run = await run_task("io.kestra.plugin.core.log.Log", {"message": "hello", "level": "WARN"})
    assert run.state is State.SUCCESS and run.outputs == {}
    assert run.messages == ["hello"] and run.logs[0][0] == "WARN"


async def test_secrets_are_masked_in_logs_and_outputs() -> None:
    run = await run_task(Waiting, {"token": "s3cr3t-value"}, secrets={"TOKEN": "s3cr3t-value"})
    assert run.state is State.SUCCESS, run.error
    assert run.messages == ["token is ******"] and run.outputs == {"echo": "******"}


async def test_a_bad_property_and_a_task_failure_end_failed_saying_why() -> None:
    run = await run_task(Waiting, {"token": ["not", "text"]})
    assert run.state is State.FAILED and "invalid property 'token'" in (run.error or "")
    run = await run_task(Waiting, {"token": "t", "seconds": -1})
    assert run.state is State.FAILED and run.error == "no negative waits"


async def test_the_time_limit_ends_the_attempt() -> None:
    Waiting.cancelled.clear()
    run = await run_task(Waiting, {"token": "t", "seconds": 60}, timeout=timedelta(seconds=0.2))
    assert run.state is State.FAILED
    assert (run.error or "").startswith("timed out after PT0.2S, the task's `timeout`")
    assert Waiting.cancelled.is_set()


async def test_a_kill_is_a_cancellation_the_connector_sees() -> None:
    Waiting.started.clear()
    Waiting.cancelled.clear()
    running = asyncio.ensure_future(run_task(Waiting, {"token": "t", "seconds": 60}))
    await asyncio.wait_for(Waiting.started.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert Waiting.cancelled.is_set()


class StoreProperties(ConnectorProperties):
    content: str


class Storing:
    """Stores its content as a file and outputs the file's URI."""

    Properties = StoreProperties
    uses_workdir = False

    async def run(self, properties: StoreProperties, context: TaskContext) -> dict[str, Any]:
        assert context.files is not None, "a worker always has a file storage"
        with context.files.writer("out.txt") as out:
            out.write(properties.content.encode())
        return {"file": context.files.uri("out.txt")}


async def test_a_secret_marker_is_resolved_for_the_connector_and_masked() -> None:
    run = await run_task(Waiting, {"token": f"Bearer {secret('TOKEN')}"}, secrets={"TOKEN": "tk-1"})
    assert run.state is State.SUCCESS, run.error
    assert run.messages == ["token is Bearer ******"] and run.outputs == {"echo": "Bearer ******"}
    run = await run_task(Waiting, {"token": secret("NOPE")}, secrets={"TOKEN": "tk-1"})
    assert run.state is State.FAILED and "secret NOPE is not defined" in (run.error or "")
    with pytest.raises(ValueError, match="not a secret name"):
        secret("no spaces")


async def test_a_stored_file_is_read_back_until_the_run_is_dropped() -> None:
    run = await run_task(Storing, {"content": "42 rows"})
    assert run.state is State.SUCCESS, run.error
    assert run.read_file(run.outputs["file"]) == b"42 rows"
    with pytest.raises(StorageError, match="no such file"):
        run.read_file(run.outputs["file"] + "-not")
    folder = run.storage_dir
    assert folder is not None and folder.is_dir()
    del run
    gc.collect()
    assert not folder.exists()  # the temporary storage went with its TaskRun


async def test_a_storage_dir_given_keeps_the_files(tmp_path: Path) -> None:
    run = await run_task(Storing, {"content": "kept"}, storage_dir=tmp_path)
    assert run.state is State.SUCCESS, run.error
    (stored,) = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert stored.name == "out.txt" and stored.read_bytes() == b"kept"
    assert stored.parts[len(tmp_path.parts)] == "test"  # the kit's namespace


async def test_the_test_worker_says_when_no_broker_answers() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(KitError, match=f"no Kafka broker answers at {bootstrap}"):
        async with TestWorker(bootstrap=bootstrap):
            pass


async def test_the_test_worker_says_why_its_broker_did_not_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/bin/false")  # a broker binary that exits at once
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where its storage goes
    with pytest.raises(KitError, match=r"embedded broker did not start: .* exited with code 1"):
        async with TestWorker():
            pass
    assert not list(tmp_path.iterdir())  # its temporary storage was removed
