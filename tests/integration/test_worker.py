"""The worker service against the embedded broker: requests in, results and logs out.

The worker runs as an asyncio task in the test's loop. Every test uses fresh execution
ids and reads `task-results` and `logs` filtered by them (the broker is session-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from headrace import codec
from headrace.config import Settings
from headrace.expressions import SECRET_MARKER_PREFIX, SECRET_MARKER_SUFFIX
from headrace.kafka import make_consumer, make_producer
from headrace.messages import LogLevel, LogRecord, TaskKill, TaskRequest, TaskResult
from headrace.services.worker.runner import MASK
from headrace.services.worker.service import Worker
from headrace.states import State
from headrace.topics.definitions import LOGS, TASK_CONTROL, TASK_REQUESTS, TASK_RESULTS

DEADLINE_S = 30.0


def new_request(type_: str, properties: dict[str, Any], **overrides: Any) -> TaskRequest:
    execution_id = f"wt-{uuid.uuid4().hex[:12]}"
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "namespace": "tests.worker",
        "flow_id": "flow",
        "flow_revision": 1,
        "task_run_id": f"{execution_id}-run",
        "task_id": "task",
        "attempt": 1,
        "type": type_,
        "properties": properties,
        "time": datetime.now(UTC),
    }
    fields.update(overrides)
    return TaskRequest(**fields)


class Outcomes:
    """Collects `task-results` and `logs` by execution id, from a consumer of its own."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = make_consumer(
            settings, TASK_RESULTS.name, LOGS.name, group_id=None, client_id="test-worker-reader"
        )
        self.results: dict[str, list[TaskResult]] = defaultdict(list)
        self.logs: dict[str, list[LogRecord]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        async for record in self._consumer:
            message = codec.decode(record.value)
            if isinstance(message, TaskResult):
                self.results[message.execution_id].append(message)
            elif isinstance(message, LogRecord):
                self.logs[message.execution_id].append(message)
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(DEADLINE_S), self._changed:
                await self._changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def result(self, execution_id: str) -> TaskResult:
        await self.wait_for(lambda: bool(self.results[execution_id]), f"{execution_id}'s result")
        return self.results[execution_id][0]

    def messages(self, execution_id: str) -> list[tuple[LogLevel, str]]:
        return [(r.level, r.message) for r in self.logs[execution_id]]


async def produce(settings: Settings, *requests: TaskRequest) -> None:
    producer = make_producer(settings, client_id="test-worker-producer")
    await producer.start()
    try:
        for request in requests:
            await producer.send(
                TASK_REQUESTS.name, codec.encode(request), key=request.execution_id.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


class RunningWorker:
    def __init__(self, settings: Settings, worker_id: str, grace_s: float = 10.0) -> None:
        self.worker_id = worker_id
        self.stop_event = asyncio.Event()
        self.worker = Worker(settings, worker_id, shutdown_grace_s=grace_s)
        self.task = asyncio.create_task(self.worker.run(self.stop_event))

    async def stop(self) -> None:
        self.stop_event.set()
        async with asyncio.timeout(DEADLINE_S):
            await self.task


@pytest.fixture
async def outcomes(settings: Settings) -> AsyncIterator[Outcomes]:
    reader = Outcomes(settings)
    await reader.start()
    yield reader
    await reader.stop()


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[RunningWorker]:
    running = RunningWorker(settings, f"worker-{uuid.uuid4().hex[:6]}")
    yield running
    await running.stop()


async def test_log_and_shell_tasks_publish_results_and_logs(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker
) -> None:
    log_task = new_request("log", {"message": "hello from a log task", "level": "WARN"})
    shell_task = new_request(
        "shell",
        {"commands": ["echo one", "echo two >&2", """echo '::{"outputs": {"n": 5}}::'"""]},
        attempt=3,
    )
    await produce(settings, log_task, shell_task)

    result = await outcomes.result(log_task.execution_id)
    assert (result.state, result.outputs, result.worker_id) == (State.SUCCESS, {}, worker.worker_id)
    assert result.started_at <= result.ended_at
    await outcomes.wait_for(lambda: bool(outcomes.logs[log_task.execution_id]), "the log line")
    assert outcomes.messages(log_task.execution_id) == [(LogLevel.WARN, "hello from a log task")]

    result = await outcomes.result(shell_task.execution_id)
    assert (result.state, result.outputs, result.attempt) == (
        State.SUCCESS,
        {"n": 5, "exitCode": 0},
        3,
    )
    logs = outcomes.logs[shell_task.execution_id]
    assert sorted(r.id for r in logs) == [
        f"{shell_task.task_run_id}:3:1",
        f"{shell_task.task_run_id}:3:2",
    ]
    assert {(r.level, r.message) for r in logs} == {(LogLevel.INFO, "one"), (LogLevel.WARN, "two")}


async def test_failures_are_results_not_crashes(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker
) -> None:
    failing = new_request("shell", {"commands": ["echo no space left >&2", "exit 3"]})
    unknown = new_request("no.such.type", {})
    invalid = new_request("shell", {"commands": "not a list"})
    timed_out = new_request("shell", {"commands": ["sleep 30"]}, timeout_ms=300)
    await produce(settings, failing, unknown, invalid, timed_out)

    errors = {}
    for request in (failing, unknown, invalid, timed_out):
        result = await outcomes.result(request.execution_id)
        assert result.state == State.FAILED
        errors[request.execution_id] = result.error
    assert errors[failing.execution_id] == "exit code 3: no space left"
    assert errors[unknown.execution_id] == "unknown task type 'no.such.type'"
    assert errors[invalid.execution_id].startswith("invalid property 'commands'")
    assert errors[timed_out.execution_id] == "timed out after 300 ms"

    # The worker is still alive and serving.
    after = new_request("log", {"message": "still here"})
    await produce(settings, after)
    assert (await outcomes.result(after.execution_id)).state == State.SUCCESS


async def test_secrets_are_resolved_and_masked_in_logs(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_SECRET_API_TOKEN", "tok-93b1f")
    marker = f"{SECRET_MARKER_PREFIX}API_TOKEN{SECRET_MARKER_SUFFIX}"
    request = new_request(
        "shell",
        {
            "commands": ['echo "using $TOKEN"', 'test "$TOKEN" = tok-93b1f'],
            "env": {"TOKEN": marker},
        },
    )
    await produce(settings, request)
    result = await outcomes.result(request.execution_id)
    assert result.state == State.SUCCESS  # the command saw the real value
    await outcomes.wait_for(lambda: bool(outcomes.logs[request.execution_id]), "the log line")
    assert outcomes.messages(request.execution_id) == [(LogLevel.INFO, f"using {MASK}")]


async def test_an_interrupted_attempt_is_redelivered_to_the_next_worker(
    settings: Settings, outcomes: Outcomes, tmp_path: Path
) -> None:
    # First run: marks its start and hangs. Any later run finishes at once.
    started, runs = tmp_path / "started", tmp_path / "runs"
    request = new_request(
        "shell",
        {
            "commands": [
                f"echo run >> {runs}",
                f"if [ -f {started} ]; then echo second run; exit 0; fi",
                f"touch {started}",
                "echo first run",
                "sleep 60",
            ]
        },
    )
    first = RunningWorker(settings, f"first-{uuid.uuid4().hex[:6]}", grace_s=0.2)
    await produce(settings, request)
    await outcomes.wait_for(
        lambda: (LogLevel.INFO, "first run") in outcomes.messages(request.execution_id),
        "the first run to start",
    )
    await first.stop()
    assert outcomes.results[request.execution_id] == []  # cancelled: no result

    second = RunningWorker(settings, f"second-{uuid.uuid4().hex[:6]}")
    try:
        result = await outcomes.result(request.execution_id)
    finally:
        await second.stop()
    assert (result.state, result.worker_id) == (State.SUCCESS, second.worker_id)
    assert runs.read_text().splitlines() == ["run", "run"]
    assert (LogLevel.INFO, "second run") in outcomes.messages(request.execution_id)
    assert len(outcomes.results[request.execution_id]) == 1


async def publish_kill(settings: Settings, request: TaskRequest) -> None:
    kill = TaskKill(request.execution_id, request.task_run_id, request.attempt, datetime.now(UTC))
    producer = make_producer(settings, client_id="test-kill-producer")
    await producer.start()
    try:
        await producer.send_and_wait(
            TASK_CONTROL.name, codec.encode(kill), key=kill.execution_id.encode()
        )
    finally:
        await producer.stop()


async def test_a_kill_cancels_the_running_attempt(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker, tmp_path: Path
) -> None:
    survivor = tmp_path / "survived"
    request = new_request("shell", {"commands": ["echo started", "sleep 30", f"touch {survivor}"]})
    await produce(settings, request)
    await outcomes.wait_for(
        lambda: (LogLevel.INFO, "started") in outcomes.messages(request.execution_id),
        "the task to start",
    )
    await publish_kill(settings, request)
    result = await outcomes.result(request.execution_id)
    assert result.state is State.KILLED
    assert result.error == "killed"
    assert (result.ended_at - result.started_at).total_seconds() < 30
    assert not survivor.exists()


async def test_a_kill_that_comes_first_stops_the_attempt_from_running(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    request = new_request("shell", {"commands": [f"touch {ran}"]})
    async with asyncio.timeout(DEADLINE_S):
        await worker.worker.kills_followed.wait()
    await publish_kill(settings, request)
    async with asyncio.timeout(DEADLINE_S):  # the kill has reached the worker's memory
        while not worker.worker.knows_killed(request.task_run_id, request.attempt):
            await asyncio.sleep(0.01)
    await produce(settings, request)
    result = await outcomes.result(request.execution_id)
    assert result.state is State.KILLED
    assert not ran.exists()
