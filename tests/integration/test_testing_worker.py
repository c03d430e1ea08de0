"""`headrace.testing.TestWorker`: a connector run by the real worker on a real broker.

One kit for the module (its broker and worker take seconds to start). The connector is
a class of this module, never installed: the worker runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.messages import LogLevel
from headrace.states import State
from headrace.storage import StorageError
from headrace.testing import KitError, TestWorker, secret

TOKEN = "s3cr3t-93b1f"


class SyncProperties(ConnectorProperties):
    job: str
    token: str = ""
    seconds: float = 0.0
    fail: str = ""
    file: str = ""  # stored as the output `file` with this content


class Sync:
    """Starts a (pretend) remote sync, follows it, and records what a worker did to it."""

    Properties = SyncProperties
    aliases = ("acme.Sync",)
    uses_workdir = False
    cancelled: ClassVar[list[str]] = []  # jobs whose run saw a cancellation
    tokens: ClassVar[list[str]] = []  # tokens as the connector got them (resolved)

    async def run(self, properties: SyncProperties, context: TaskContext) -> dict[str, Any]:
        Sync.tokens.append(properties.token)
        await context.info(f"job {properties.job} running with token {properties.token}")
        try:
            await asyncio.sleep(properties.seconds)
        except asyncio.CancelledError:
            Sync.cancelled.append(properties.job)  # where a real one cancels its remote job
            raise
        if properties.fail:
            raise TaskFailed(properties.fail)
        await context.log(LogLevel.WARN, f"job {properties.job} done")
        outputs: dict[str, Any] = {"job": properties.job, "token": properties.token}
        if properties.file:
            assert context.files is not None
            with context.files.writer("report.txt") as out:
                out.write(properties.file.encode())
            outputs["file"] = context.files.uri("report.txt")
        return outputs


@pytest.fixture(scope="module")
async def kit() -> AsyncIterator[TestWorker]:
    async with TestWorker(connectors={"acme.sync": Sync}, secrets={"TOKEN": TOKEN}) as worker:
        yield worker


async def test_a_success_carries_its_outputs_and_every_log_line(kit: TestWorker) -> None:
    run = await kit.run_task("acme.sync", {"job": "1"})
    assert run.state is State.SUCCESS, run.error
    assert run.outputs == {"job": "1", "token": ""} and run.error is None
    assert run.logs == [
        (LogLevel.INFO, "job 1 running with token "),
        (LogLevel.WARN, "job 1 done"),
    ]
    # By its alias too, as a flow may name it.
    assert (await kit.run_task("acme.Sync", {"job": "2"})).outputs["job"] == "2"


async def test_a_failure_and_a_bad_property_end_failed_saying_why(kit: TestWorker) -> None:
    run = await kit.run_task("acme.sync", {"job": "3", "fail": "the vendor said no"})
    assert (run.state, run.error) == (State.FAILED, "the vendor said no")
    assert run.messages == ["job 3 running with token "]
    run = await kit.run_task("acme.sync", {"job": ["not", "text"]})
    assert run.state is State.FAILED and "invalid property 'job'" in (run.error or "")


async def test_a_secret_reaches_the_connector_and_is_masked_everywhere(kit: TestWorker) -> None:
    run = await kit.run_task("acme.sync", {"job": "4", "token": secret("TOKEN")})
    assert run.state is State.SUCCESS, run.error
    assert Sync.tokens[-1] == TOKEN  # the worker resolved the marker
    assert run.messages == ["job 4 running with token ******", "job 4 done"]
    assert run.outputs["token"] == "******"
    run = await kit.run_task("acme.sync", {"job": "5", "token": secret("MISSING")})
    assert run.state is State.FAILED
    assert "secret MISSING is not defined" in (run.error or "")


async def test_a_kill_reaches_the_worker_and_cancels_the_connector(kit: TestWorker) -> None:
    started = await kit.start_task("acme.sync", {"job": "6", "seconds": 120})
    line = await started.wait_log("job 6 running")
    assert line == "job 6 running with token "
    run = await started.kill()
    assert (run.state, run.error) == (State.KILLED, "killed")
    assert "6" in Sync.cancelled
    assert await started.result() is run  # asked again: the same end


async def test_the_tasks_timeout_ends_it_failed(kit: TestWorker) -> None:
    run = await kit.run_task(
        "acme.sync", {"job": "7", "seconds": 120}, timeout=timedelta(seconds=0.5)
    )
    assert run.state is State.FAILED
    assert (run.error or "").startswith("timed out after PT0.5S, the task's `timeout`")
    assert "7" in Sync.cancelled


async def test_a_stored_file_is_read_through_the_run(kit: TestWorker) -> None:
    run = await kit.run_task("acme.sync", {"job": "8", "file": "42 rows"})
    assert run.state is State.SUCCESS, run.error
    uri = run.outputs["file"]
    assert uri.startswith("headrace:///test/test-flow/executions/")
    assert run.read_file(uri) == b"42 rows"
    assert run.storage_dir == kit.storage_dir
    with pytest.raises(StorageError, match="no such file"):
        run.read_file(uri.replace("report.txt", "other.txt"))


async def test_installed_types_run_by_name_and_unknown_ones_fail(kit: TestWorker) -> None:
    run = await kit.run_task("log", {"message": "hello", "level": "WARN"})
    assert (run.state, run.logs) == (State.SUCCESS, [(LogLevel.WARN, "hello")])
    run = await kit.run_task("shell", {"commands": ["echo from a shell"]})
    assert run.state is State.SUCCESS, run.error
    assert "from a shell" in run.messages
    run = await kit.run_task("acme.nope", {})
    assert (run.state, run.error) == (State.FAILED, "unknown task type 'acme.nope'")


async def test_waiting_for_a_line_that_never_comes_says_what_it_got(kit: TestWorker) -> None:
    started = await kit.start_task("acme.sync", {"job": "9"})
    with pytest.raises(KitError, match="ended SUCCESS without a log line") as caught:
        await started.wait_log("no such line")
    assert "job 9 done" in str(caught.value)


async def test_everything_stops_even_when_the_test_body_raises() -> None:
    # A kit of its own (a broker more, seconds): this one is taken down mid-task.
    with pytest.raises(ValueError, match="the test failed"):
        async with TestWorker(connectors={"acme.sync": Sync}) as other:
            storage, port = other.storage_dir, int(other.bootstrap.rpartition(":")[2])
            started = await other.start_task("acme.sync", {"job": "10", "seconds": 120})
            await started.wait_log("job 10 running")
            raise ValueError("the test failed")
    assert "10" in Sync.cancelled  # the running attempt was cancelled, not left behind
    assert not storage.exists()
    with pytest.raises(OSError):  # the broker is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
