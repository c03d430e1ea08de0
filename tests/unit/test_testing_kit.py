"""`headrace.testing.run_task`: a connector run as a worker runs it, without Kafka."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.states import State
from headrace.testing import run_task


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
    run = await run_task(Waiting, {"token": 3})
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
