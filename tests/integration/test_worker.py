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
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import RecordMetadata

from headrace import codec
from headrace.config import Settings
from headrace.kafka import make_consumer, make_producer
from headrace.messages import LogLevel, LogRecord, TaskKill, TaskRequest, TaskResult
from headrace.secret_markers import marker, request_nonce
from headrace.services.worker import service
from headrace.services.worker.kills import KillListenerError, follow_kills
from headrace.services.worker.masking import MASK
from headrace.services.worker.publisher import FLUSH_EVERY_SENDS, AttemptPublisher
from headrace.services.worker.service import WORKER_GROUP, Worker
from headrace.states import State
from headrace.topics.definitions import LOGS, TASK_CONTROL, TASK_REQUESTS, TASK_RESULTS

DEADLINE_S = 30.0
# The secrets every test worker holds, by name (a real worker gets them sealed at start).
SECRETS = {"API_TOKEN": "tok-93b1f", "X": "xq-7781-secret"}


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
        self.starts: dict[str, list[TaskResult]] = defaultdict(list)  # RUNNING reports
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
            if isinstance(message, TaskResult) and message.state is State.RUNNING:
                self.starts[message.execution_id].append(message)
            elif isinstance(message, TaskResult):
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


async def produce(settings: Settings, *requests: TaskRequest) -> list[RecordMetadata]:
    """Publish `requests`; returns where each landed (partition, offset)."""
    producer = make_producer(settings, client_id="test-worker-producer")
    await producer.start()
    try:
        deliveries = [
            await producer.send(
                TASK_REQUESTS.name, codec.encode(request), key=request.execution_id.encode()
            )
            for request in requests
        ]
        return list(await asyncio.gather(*deliveries))
    finally:
        await producer.stop()


async def committed_offset(settings: Settings, partition: int) -> int | None:
    """The workers' group's committed position on one `task-requests` partition."""
    # A consumer of the group that never subscribes: it asks the coordinator without
    # joining (aiokafka's admin client cannot decode the embedded broker's OffsetFetch).
    reader = make_consumer(settings, group_id=WORKER_GROUP, client_id="test-offset-reader")
    await reader.start()
    try:
        return await reader.committed(TopicPartition(TASK_REQUESTS.name, partition))
    finally:
        await reader.stop()


async def wait_for_commit(settings: Settings, where: RecordMetadata) -> None:
    """Until the offset after `where` is committed (polled: commits are not announced)."""
    async with asyncio.timeout(DEADLINE_S):
        while (await committed_offset(settings, where.partition) or 0) <= where.offset:
            await asyncio.sleep(0.05)


class RunningWorker:
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        grace_s: float = 10.0,
        *,
        worker_class: type[Worker] = Worker,
        prepare: Callable[[Worker], None] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.stop_event = asyncio.Event()
        self.worker = worker_class(settings, worker_id, shutdown_grace_s=grace_s, secrets=SECRETS)
        if prepare is not None:
            prepare(self.worker)
        self.task = asyncio.create_task(self.worker.run(self.stop_event, ready))

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
    # The run was announced first, under the same run id.
    (start,) = outcomes.starts[log_task.execution_id]
    assert (start.run_id, start.worker_id, start.attempt) == (result.run_id, worker.worker_id, 1)
    assert len(result.run_id) == 12
    await outcomes.wait_for(lambda: bool(outcomes.logs[log_task.execution_id]), "the log line")
    assert outcomes.messages(log_task.execution_id) == [(LogLevel.WARN, "hello from a log task")]

    result = await outcomes.result(shell_task.execution_id)
    assert (result.state, result.outputs, result.attempt) == (
        State.SUCCESS,
        {"n": 5, "exitCode": 0},
        3,
    )
    logs = outcomes.logs[shell_task.execution_id]
    ids = sorted(r.id.split(":") for r in logs)
    nonce = ids[0][2]  # random per run of the attempt
    assert ids == [
        [shell_task.task_run_id, "3", nonce, "1"],
        [shell_task.task_run_id, "3", nonce, "2"],
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
    assert errors[timed_out.execution_id].startswith("timed out after PT0.3S, the task's `timeout`")

    # The worker is still alive and serving.
    after = new_request("log", {"message": "still here"})
    await produce(settings, after)
    assert (await outcomes.result(after.execution_id)).state == State.SUCCESS


async def test_secrets_are_resolved_and_masked_in_logs(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker
) -> None:
    nonce = request_nonce(uuid.uuid4().hex, "execution", "run", 1)
    request = new_request(
        "shell",
        {
            "commands": ['echo "using $TOKEN"', 'test "$TOKEN" = tok-93b1f'],
            "env": {"TOKEN": marker("API_TOKEN", nonce)},
        },
        secret_names=["API_TOKEN"],
        secret_nonce=nonce,
    )
    await produce(settings, request)
    result = await outcomes.result(request.execution_id)
    assert result.state == State.SUCCESS  # the command saw the real value
    await outcomes.wait_for(lambda: bool(outcomes.logs[request.execution_id]), "the log line")
    assert outcomes.messages(request.execution_id) == [(LogLevel.INFO, f"using {MASK}")]


async def test_secret_markers_from_outside_are_not_resolved(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker
) -> None:
    """A `log` task whose message came from an input holding marker text, while the
    flow's own secret('API_TOKEN') is in the request: the line shows the text as sent
    (NUL made U+FFFD), not the value, which would have been masked."""
    nonce = request_nonce(uuid.uuid4().hex, "execution", "run", 1)
    forged = ["\x00secret:API_TOKEN\x00", marker("API_TOKEN", ""), marker("API_TOKEN", "e" * 32)]
    request = new_request(
        "log",
        {"message": " ".join(forged)},
        secret_names=["API_TOKEN"],
        secret_nonce=nonce,
    )
    await produce(settings, request)
    assert (await outcomes.result(request.execution_id)).state == State.SUCCESS
    await outcomes.wait_for(lambda: bool(outcomes.logs[request.execution_id]), "the log line")
    ((level, line),) = outcomes.messages(request.execution_id)
    assert level is LogLevel.INFO
    assert line == " ".join(forged).replace("\x00", "\ufffd")
    assert MASK not in line and "tok-93b1f" not in line


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
    # Both runs' lines are kept: the second run's ids do not collide with the first's.
    ids = [r.id for r in outcomes.logs[request.execution_id]]
    assert len(set(ids)) == len(ids) == 2  # "first run", "second run"
    assert len({i.rsplit(":", 1)[0] for i in ids}) == 2  # one nonce per run


async def publish_kill(settings: Settings, request: TaskRequest, run_id: str = "") -> None:
    kill = TaskKill(
        request.execution_id, request.task_run_id, request.attempt, datetime.now(UTC), run_id
    )
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


async def test_a_kill_naming_a_run_stops_that_run_only(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker, tmp_path: Path
) -> None:
    """The executor kills one run of an attempt (a lost one, or a redelivered copy of an
    attempt that is over): another run of the same attempt goes on."""
    go = tmp_path / "go"
    request = new_request(
        "shell", {"commands": ["echo started", f"while [ ! -f {go} ]; do sleep 0.02; done"]}
    )
    await produce(settings, request)
    # Both: the line (on `logs`) and the RUNNING report (on `task-results`) come in on two
    # topics, in either order.
    await outcomes.wait_for(
        lambda: (
            (LogLevel.INFO, "started") in outcomes.messages(request.execution_id)
            and bool(outcomes.starts[request.execution_id])
        ),
        "the task to start",
    )
    (start,) = outcomes.starts[request.execution_id]
    await publish_kill(settings, request, run_id="another-run")
    async with asyncio.timeout(DEADLINE_S):
        while not worker.worker.knows_killed(request.task_run_id, 1, "another-run"):
            await asyncio.sleep(0.01)
    go.touch()
    result = await outcomes.result(request.execution_id)
    assert (result.state, result.run_id) == (State.SUCCESS, start.run_id)

    again = new_request("shell", {"commands": ["echo started", "sleep 30"]})
    await produce(settings, again)
    await outcomes.wait_for(lambda: bool(outcomes.starts[again.execution_id]), "the run's start")
    (start,) = outcomes.starts[again.execution_id]
    await publish_kill(settings, again, run_id=start.run_id)
    result = await outcomes.result(again.execution_id)
    assert (result.state, result.run_id, result.error) == (State.KILLED, start.run_id, "killed")


# --- hardening -------------------------------------------------------------------------


def fail_result_sends(worker: Worker, execution_id: str, times: int | None) -> list[str]:
    """Make the worker's real producer fail sends of this execution's results: first when
    enqueuing, then when acknowledging (`times` failures, None for ever)."""
    original = worker._producer.send
    failures: list[str] = []

    async def send(topic: str, value: bytes, key: bytes | None = None, **kwargs: Any):
        ours = (
            topic == TASK_RESULTS.name
            and key == execution_id.encode()
            and codec.decode(value).state is not State.RUNNING  # the run's start goes out
        )
        if ours and (times is None or len(failures) < times):
            failures.append("enqueue" if len(failures) % 2 == 0 else "ack")
            if failures[-1] == "enqueue":
                raise KafkaConnectionError("injected: broker unreachable")
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(KafkaConnectionError("injected: not acknowledged"))
            return delivery
        return await original(topic, value, key=key, **kwargs)

    worker._producer.send = send  # type: ignore[method-assign]  # fault injection
    return failures


async def test_a_result_that_cannot_be_published_is_retried_and_commits_continue(
    settings: Settings, outcomes: Outcomes
) -> None:
    first = new_request("log", {"message": "first"})
    # Same execution, so the same partition: its commit must not stall behind the first.
    second = new_request(
        "log", {"message": "second"}, execution_id=first.execution_id, task_run_id="second-run"
    )
    failures: list[list[str]] = []
    running = RunningWorker(
        settings,
        f"flaky-{uuid.uuid4().hex[:6]}",
        prepare=lambda w: failures.append(fail_result_sends(w, first.execution_id, times=3)),
    )
    try:
        where = await produce(settings, first, second)
        await outcomes.wait_for(
            lambda: len(outcomes.results[first.execution_id]) == 2, "both results"
        )
        assert failures == [["enqueue", "ack", "enqueue"]]
        assert {r.task_run_id: r.state for r in outcomes.results[first.execution_id]} == {
            first.task_run_id: State.SUCCESS,
            "second-run": State.SUCCESS,
        }
        await wait_for_commit(settings, where[1])
    finally:
        await running.stop()


async def test_a_stop_while_publishing_fails_leaves_the_offset_uncommitted(
    settings: Settings, outcomes: Outcomes
) -> None:
    request = new_request("log", {"message": "never acknowledged"})
    failures: list[list[str]] = []
    running = RunningWorker(
        settings,
        f"broken-{uuid.uuid4().hex[:6]}",
        prepare=lambda w: failures.append(fail_result_sends(w, request.execution_id, None)),
    )
    (where,) = await produce(settings, request)
    await outcomes.wait_for(lambda: bool(outcomes.logs[request.execution_id]), "the log line")
    async with asyncio.timeout(DEADLINE_S):
        while not failures[0]:
            await asyncio.sleep(0.01)
    await running.stop()  # does not hang on the failing publish
    assert outcomes.results[request.execution_id] == []
    committed = await committed_offset(settings, where.partition)
    assert committed is None or committed <= where.offset  # redelivered to the next worker


async def test_tasks_do_not_see_the_workers_secrets_and_all_secrets_are_masked(
    settings: Settings, outcomes: Outcomes, worker: RunningWorker
) -> None:
    request = new_request(
        "shell", {"commands": ["env", "echo literal xq-7781-secret", "echo end-of-env"]}
    )
    await produce(settings, request)
    assert (await outcomes.result(request.execution_id)).state == State.SUCCESS
    await outcomes.wait_for(
        lambda: (LogLevel.INFO, "end-of-env") in outcomes.messages(request.execution_id),
        "the last line",
    )
    printed = [message for _, message in outcomes.messages(request.execution_id)]
    assert not any("HEADRACE_" in line for line in printed)  # not inherited
    assert any(line.startswith("PATH=") for line in printed)
    assert f"literal {MASK}" in printed  # masked though the task never referenced it


async def test_a_missing_control_topic_is_an_error(settings: Settings) -> None:
    with pytest.raises(KillListenerError, match="has no partitions"):
        async with asyncio.timeout(DEADLINE_S):
            await follow_kills(
                settings,
                "test-kills",
                lambda kill: None,
                asyncio.Event(),
                topic=f"missing-{uuid.uuid4().hex[:8]}",
            )


class DeafWorker(Worker):
    """Its kill listener works, then dies when the test says so."""

    lose_kills: asyncio.Event

    async def _follow_kills(self, stop: asyncio.Event) -> None:
        self.kills_followed.set()
        await self.lose_kills.wait()
        raise KillListenerError("injected: lost the kill listener")


async def test_a_dead_kill_listener_stops_the_worker_after_a_final_commit(
    settings: Settings, outcomes: Outcomes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the final commit can commit: the periodic one never comes.
    monkeypatch.setattr(service, "COMMIT_INTERVAL_S", 3600.0)
    go = tmp_path / "go"
    request = new_request(
        "shell", {"commands": ["echo started", f"while [ ! -f {go} ]; do sleep 0.02; done"]}
    )

    def prepare(worker: Worker) -> None:
        worker.lose_kills = asyncio.Event()  # type: ignore[attr-defined]

    running = RunningWorker(
        settings, f"deaf-{uuid.uuid4().hex[:6]}", worker_class=DeafWorker, prepare=prepare
    )
    (where,) = await produce(settings, request)
    await outcomes.wait_for(
        lambda: (LogLevel.INFO, "started") in outcomes.messages(request.execution_id),
        "the task to start",
    )
    running.worker.lose_kills.set()  # type: ignore[attr-defined]
    go.touch()  # the attempt ends during the shutdown's grace period
    with pytest.raises(KillListenerError, match="lost the kill listener"):
        async with asyncio.timeout(DEADLINE_S):
            await running.task  # fails loudly instead of serving without kills
    assert (await outcomes.result(request.execution_id)).state == State.SUCCESS
    assert (await committed_offset(settings, where.partition) or 0) == where.offset + 1


async def test_ready_is_called_once_joined_and_following_kills(
    settings: Settings, outcomes: Outcomes
) -> None:
    calls: list[tuple[bool, bool]] = []
    became_ready = asyncio.Event()

    def ready() -> None:
        calls.append((running.worker.joined.is_set(), running.worker.kills_followed.is_set()))
        became_ready.set()

    running = RunningWorker(settings, f"ready-{uuid.uuid4().hex[:6]}", ready=ready)
    try:
        async with asyncio.timeout(DEADLINE_S):
            await became_ready.wait()
        # Ready means serving: a kill published now reaches it (the listener is at the end).
        request = new_request("shell", {"commands": ["sleep 30"]})
        await publish_kill(settings, request)
        async with asyncio.timeout(DEADLINE_S):
            while not running.worker.knows_killed(request.task_run_id, request.attempt):
                await asyncio.sleep(0.01)
    finally:
        await running.stop()
    assert calls == [(True, True)]


async def test_pending_log_sends_stay_bounded(settings: Settings, outcomes: Outcomes) -> None:
    execution_id = f"wt-{uuid.uuid4().hex[:12]}"
    producer = make_producer(settings, client_id="test-publisher")
    await producer.start()
    try:
        publisher = AttemptPublisher(producer, execution_id.encode(), asyncio.Event(), "test")
        most = 0
        for n in range(3 * FLUSH_EVERY_SENDS):
            record = LogRecord(
                f"{execution_id}:{n}",
                execution_id,
                "ns",
                "flow",
                datetime.now(UTC),
                LogLevel.INFO,
                f"line {n}",
            )
            await publisher.send(LOGS.name, codec.encode(record))
            most = max(most, publisher.pending_count)
        await publisher.flush()
        assert publisher.pending_count == 0
    finally:
        await producer.stop()
    assert most < FLUSH_EVERY_SENDS  # acknowledgements are awaited as it goes
    await outcomes.wait_for(
        lambda: len(outcomes.logs[execution_id]) == 3 * FLUSH_EVERY_SENDS, "every line"
    )
