"""A test kit for connector authors: run a task the way a worker runs it, two ways.

`run_task` runs one attempt in-process, through the worker's own attempt runner
(`services.worker.runner`), not a shortcut: properties validated by the connector's
model (a bad one is a FAILED run saying which property), the time limit, secrets masked
in logs, outputs and the error, log lines cut and counted, outputs checked for size, a
file storage for `context.files`. Only Kafka is left out: log lines are collected, and
the result is returned instead of published. Fast: use it for most tests.

    from headrace.testing import run_task

    async def test_my_connector():
        run = await run_task(MyConnector, {"url": "http://127.0.0.1:8080"})
        assert run.state is State.SUCCESS, run.error
        assert run.outputs["rows"] == 3
        assert "synced 3 rows" in run.messages

A kill is a cancellation: cancel the `asyncio` task running `run_task` and the connector
sees what a worker's kill does to it.

`TestWorker` runs the real worker (`services.worker.service.Worker`) in the test's event
loop, on the embedded broker it starts (seconds), and runs tasks by publishing their
requests on `task-requests` as the executor does: the result and log lines come back over
`task-results` and `logs`, and a kill goes over `task-control`. Use it for what crosses
Kafka (a kill as a worker receives it, a connector found by its entry point, what a
result carries), one worker per test module:

    async with TestWorker(connectors={"acme.sync": AcmeSync}, secrets={"TOKEN": "s3cr3t"}) as w:
        run = await w.run_task("acme.sync", {"token": secret("TOKEN")})
        started = await w.start_task("acme.sync", {"seconds": 60})
        await started.wait_log("job 42 running")
        run = await started.kill()

Both return a `TaskRun`. Its `read_file(uri)` reads a file the task stored (an output
naming a `headrace:///...` URI): `run_task` keeps its storage in a temporary folder that
lives as long as the `TaskRun` (or in `storage_dir=`), `TestWorker` in one removed when
the `async with` ends (or in `storage_dir=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets as random_tokens
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import RecordMetadata

from headrace import codec
from headrace.broker import BrokerError, start_embedded_broker
from headrace.config import Settings
from headrace.connectors.base import Connector, aliases_of
from headrace.connectors.registry import connector_classes
from headrace.consume import consume, decode
from headrace.errors import HeadraceError
from headrace.flow.model import canonical_task_type
from headrace.kafka import make_consumer, make_producer
from headrace.messages import LogLevel, LogRecord, Message, TaskKill, TaskRequest, TaskResult
from headrace.secret_markers import MARKER_PREFIX, MARKER_SUFFIX, NAME_PATTERN, marker
from headrace.services.worker.runner import run_attempt
from headrace.services.worker.service import AttemptKey, Worker
from headrace.states import State
from headrace.storage import Storage, StorageError
from headrace.topics.apply import apply_topics
from headrace.topics.definitions import (
    LOGS,
    MAX_VALUE_BYTES,
    TASK_CONTROL,
    TASK_REQUESTS,
    TASK_RESULTS,
)

log = logging.getLogger(__name__)

TEST_TYPE = "test.connector"  # the type a connector class passed to `run_task` runs under
# Where the kit's tasks run: their files are under headrace:///test/test-flow/...
TEST_NAMESPACE = "test"
TEST_FLOW = "test-flow"
TEST_TASK = "test-task"

# The nonce of the kit's secret markers (`secret()`): one per process, since a marker is
# written before the request that carries it exists. Markers only resolve with it.
_NONCE = random_tokens.token_hex(16)
_MARKER = re.compile(
    re.escape(f"{MARKER_PREFIX}{_NONCE}:") + f"({NAME_PATTERN})" + re.escape(MARKER_SUFFIX)
)

# TestWorker: partitions of the topics it creates (one worker reads them all), how long
# the worker may take to join its group, and how long after a task's own time limit a
# result may take to come (the worker publishes one at the limit, cancellation done).
PARTITIONS = 1
READY_WAIT = timedelta(seconds=60)
RESULT_SLACK = timedelta(seconds=30)
# How long a stop of the test worker may take (running attempts are cancelled at once).
STOP_WAIT_S = 30.0
# Marks the kit's fences on `logs` (see `StartedTask.result`): never a message.
FENCE = b"headrace-testing-fence"
DEFAULT_WAIT = timedelta(seconds=30)  # `wait_log` and `kill`, unless told otherwise


class KitError(HeadraceError):
    """The test kit could not do what it was asked (no broker, no result in time): the
    message says what it waited for, or why it could not start."""


def secret(name: str) -> str:
    """What `{{ secret('NAME') }}` renders to in a flow, for properties given to the kit:
    the worker swaps it for the value of `secrets[NAME]` just before the task runs, and
    fails the run naming a secret it does not have. Usable inside text:
    `f"Bearer {secret('TOKEN')}"`."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{name!r} is not a secret name ({NAME_PATTERN})")
    return marker(name, _NONCE)


def _secret_names(value: Any, found: list[str]) -> list[str]:
    """The names of the kit's secret markers in `value`, each once, in order."""
    if isinstance(value, str):
        found += [name for name in _MARKER.findall(value) if name not in found]
    elif isinstance(value, Mapping):
        for item in value.values():
            _secret_names(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _secret_names(item, found)
    return found


def _request(
    task_type: str,
    properties: Mapping[str, Any],
    *,
    execution_id: str,
    task_run_id: str,
    attempt: int,
    timeout: timedelta | None,
) -> TaskRequest:
    """A request as the executor renders it: properties and the secrets they name."""
    names = _secret_names(properties, [])
    return TaskRequest(
        execution_id=execution_id,
        namespace=TEST_NAMESPACE,
        flow_id=TEST_FLOW,
        flow_revision=1,
        task_run_id=task_run_id,
        task_id=TEST_TASK,
        attempt=attempt,
        type=task_type,
        properties=dict(properties),
        time=datetime.now(UTC),
        timeout_ms=None if timeout is None else int(timeout.total_seconds() * 1000),
        secret_names=names,
        secret_nonce=_NONCE if names else "",
    )


@dataclass(slots=True)
class TaskRun:
    """How one attempt ended, what it logged, and where its files are."""

    state: State
    outputs: dict[str, Any]
    error: str | None
    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    # The storage folder the attempt wrote its files to (None: it had none).
    storage_dir: Path | None = None
    # `run_task`'s temporary storage: removed with the TaskRun (its finalizer).
    _temporary: tempfile.TemporaryDirectory[str] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.logs]

    def read_file(self, uri: str) -> bytes:
        """The content of the storage file `uri` (`headrace:///...`, say an output of the
        run); StorageError when there is no such file. Blocking, as file reads are."""
        if self.storage_dir is None:
            raise StorageError(f"{uri}: this run had no file storage")
        with Storage(self.storage_dir).open(uri) as file:
            return file.read()


async def run_task(
    connector: str | type[Connector],
    properties: Mapping[str, Any],
    *,
    secrets: Mapping[str, str] | None = None,
    timeout: timedelta | None = None,
    attempt: int = 1,
    storage_dir: Path | None = None,
) -> TaskRun:
    """Run one attempt of `connector` (an installed task type's name or alias, or a class) with
    `properties` (values as a flow's expressions would have rendered them; `secret(NAME)`
    for `{{ secret('NAME') }}`), in-process, without Kafka.

    `secrets`: the worker's secrets by name; their values are masked in everything the
    run reports. `timeout`: the task's `timeout` (default: the workers' default).
    `storage_dir`: the file storage `context.files` writes to; default a temporary
    folder removed once the returned `TaskRun` is garbage (read files through it first).
    """
    if isinstance(connector, str):
        task_type, connectors = canonical_task_type(connector), connector_classes()
    else:
        task_type, connectors = TEST_TYPE, {TEST_TYPE: connector}
    request = _request(
        task_type,
        properties,
        execution_id="test-execution",
        task_run_id="test-task-run",
        attempt=attempt,
        timeout=timeout,
    )
    temporary = None
    if storage_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="headrace-test-storage-")
        storage_dir = Path(temporary.name)
    logs: list[tuple[LogLevel, str]] = []

    async def collect(record: LogRecord) -> None:
        logs.append((record.level, record.message))

    result = await run_attempt(
        request,
        worker_id="test-worker",
        publish_log=collect,
        secrets=secrets,
        connectors=connectors,
        storage=Storage(storage_dir),
    )
    return TaskRun(
        state=result.state,
        outputs=result.outputs,
        error=result.error,
        logs=logs,
        storage_dir=storage_dir,
        _temporary=temporary,
    )


# ------------------------------------------------------------------ the real worker

_T = TypeVar("_T")


class _Pulse:
    """Wakes whoever waits for a condition each time something changed (a record read,
    the worker ready or stopped): conditions are read again, nothing is polled."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self, *_: object) -> None:
        self._event.set()

    async def until(self, condition: Callable[[], _T], what: str, within: timedelta) -> _T:
        """`condition()`'s first truthy value; KitError naming `what` once `within` passed.
        What `condition` raises goes through (a stopped worker, say)."""
        try:
            async with asyncio.timeout(within.total_seconds()):
                while True:
                    self._event.clear()  # before reading: a change from now on wakes us
                    if value := condition():
                        return value
                    await self._event.wait()
        except TimeoutError:
            raise KitError(
                f"timed out after {within.total_seconds():g}s waiting for {what}"
            ) from None


@dataclass(slots=True)
class _Seen:
    """What the reader saw of one task run: its final results (not the RUNNING ones)."""

    results: list[TaskResult] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)

    def result(self, attempt: int) -> TaskResult | None:
        return next((r for r in self.results if r.attempt == attempt), None)


class _Reader:
    """Follows `task-results` and `logs` from their end, keeping what concerns the task
    runs it was told of (a shared broker carries others)."""

    def __init__(self, settings: Settings, client_id: str, pulse: _Pulse) -> None:
        self._consumer = make_consumer(settings, group_id=None, client_id=client_id)
        self._pulse = pulse
        self._stop = asyncio.Event()
        self.runs: dict[str, _Seen] = {}
        self.logs_read_to: dict[int, int] = {}  # `logs` partition -> next offset to read
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        try:
            assigned = []
            for topic in (TASK_RESULTS.name, LOGS.name):
                partitions = self._consumer.partitions_for_topic(topic)
                if not partitions:
                    await self._consumer.topics()  # refreshes metadata: the topic is new
                    partitions = self._consumer.partitions_for_topic(topic)
                if not partitions:
                    raise KitError(f"topic '{topic}' has no partitions on the broker")
                assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            await self._consumer.seek_to_end()
            for partition in assigned:
                await self._consumer.position(partition)  # now, not at the first fetch
        except BaseException:
            await self._consumer.stop()
            raise
        self.task = asyncio.create_task(consume(self._consumer, self._handle, self._stop))
        self.task.add_done_callback(self._pulse.fire)

    async def stop(self) -> None:
        self._stop.set()
        try:
            if self.task is not None:
                with contextlib.suppress(Exception):  # reported already by the waits
                    await self.task
        finally:
            await self._consumer.stop()

    def follow(self, task_run_id: str) -> _Seen:
        return self.runs.setdefault(task_run_id, _Seen())

    async def _handle(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            if record.topic == LOGS.name:
                self.logs_read_to[record.partition] = record.offset + 1
            if record.value == FENCE:
                continue
            message = decode(record)
            task_run_id = getattr(message, "task_run_id", None)
            seen = self.runs.get(task_run_id) if task_run_id else None
            if seen is None:
                continue
            if isinstance(message, TaskResult) and message.state is not State.RUNNING:
                seen.results.append(message)
            elif isinstance(message, LogRecord):
                seen.logs.append(message)
        self._pulse.fire()


class TestWorker:
    """A real worker on a real broker, for a connector's tests (`async with`).

    `connectors`: task type -> connector class, beside the installed types (a class need
    not be installed: the worker runs in this process). `secrets`: the worker's secrets
    by name, masked in everything it reports. `bootstrap`: a broker to use instead of
    starting the embedded one (no other workers may read it: they share the workers'
    group and would take some of the requests); `low_latency`: it is an embedded broker
    (default: only when the kit starts it). `storage_dir`: the worker's file storage
    (default: a temporary folder removed at exit). `default_timeout`: the time limit of
    tasks that set none (a worker's default is hours: a hung connector should fail a
    test sooner).
    """

    __test__: ClassVar[bool] = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        connectors: Mapping[str, type[Connector]] | None = None,
        *,
        secrets: Mapping[str, str] | None = None,
        bootstrap: str | None = None,
        low_latency: bool | None = None,
        storage_dir: Path | None = None,
        default_timeout: timedelta = timedelta(minutes=5),
        concurrency: int = 16,
    ) -> None:
        self._own = dict(connectors or {})
        self._own_aliases = {
            alias: name for name, cls in self._own.items() for alias in aliases_of(cls)
        }
        self._secrets = dict(secrets or {})
        self._bootstrap = bootstrap
        self._low_latency = bootstrap is None if low_latency is None else low_latency
        self._storage_dir = storage_dir
        self._default_timeout = default_timeout
        self._concurrency = concurrency
        self.worker_id = f"test-worker-{uuid.uuid4().hex[:6]}"
        self._pulse = _Pulse()
        self._stack: contextlib.AsyncExitStack | None = None
        self._ended: set[AttemptKey] = set()  # attempts the worker is done with
        self._ready = False
        self._producer: AIOKafkaProducer | None = None
        self._reader: _Reader | None = None
        self._worker_task: asyncio.Task[None] | None = None

    @property
    def bootstrap(self) -> str:
        """The broker's address (the embedded one's once started)."""
        if self._bootstrap is None:
            raise KitError("the test worker is not started: use `async with TestWorker(...)`")
        return self._bootstrap

    @property
    def storage_dir(self) -> Path:
        """The worker's file storage folder."""
        if self._storage_dir is None:
            raise KitError("the test worker is not started: use `async with TestWorker(...)`")
        return self._storage_dir

    async def __aenter__(self) -> TestWorker:
        if self._stack is not None:
            raise KitError("this test worker is running already")
        stack = contextlib.AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await _close(stack, reported=True)
            raise
        self._stack = stack
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            # The test's own error comes first: a failed stop under it is only logged.
            await _close(stack, reported=error is not None)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        self._ready, self._ended = False, set()  # a kit may be entered again once exited
        if self._storage_dir is None:
            folder = tempfile.mkdtemp(prefix="headrace-test-storage-")
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            stack.callback(setattr, self, "_storage_dir", None)
            self._storage_dir = Path(folder)
        if self._bootstrap is None:
            try:
                broker = await asyncio.to_thread(start_embedded_broker)
            except (BrokerError, OSError, RuntimeError) as exc:  # RuntimeError: no binary
                raise KitError(f"the test worker's embedded broker did not start: {exc}") from exc
            stack.push_async_callback(asyncio.to_thread, broker.stop)
            stack.callback(setattr, self, "_bootstrap", None)
            self._bootstrap = broker.bootstrap
        try:
            await apply_topics(self._bootstrap, PARTITIONS)
        except KafkaConnectionError as exc:
            raise KitError(f"no Kafka broker answers at {self._bootstrap}: {exc}") from exc
        except (KafkaError, HeadraceError) as exc:
            raise KitError(f"cannot create the topics at {self._bootstrap}: {exc!r}") from exc
        settings = Settings(
            kafka_bootstrap=self._bootstrap,
            partitions=PARTITIONS,
            low_latency=self._low_latency,
            worker_concurrency=self._concurrency,
            worker_task_timeout=self._default_timeout,
            storage_dir=str(self._storage_dir),
        )
        producer = make_producer(settings, client_id=f"{self.worker_id}-kit")
        await producer.start()
        stack.push_async_callback(producer.stop)
        self._producer = producer
        reader = _Reader(settings, f"{self.worker_id}-reader", self._pulse)
        await reader.start()
        stack.push_async_callback(reader.stop)
        self._reader = reader
        await self._start_worker(stack, settings)

    async def _start_worker(self, stack: contextlib.AsyncExitStack, settings: Settings) -> None:
        worker = Worker(
            settings,
            self.worker_id,
            # At exit, running attempts are cancelled at once, as a killed test's would be.
            shutdown_grace_s=0.0,
            secrets=self._secrets,
            connectors={**connector_classes(), **self._own},
            on_attempt_end=self._attempt_ended,
        )
        stop = asyncio.Event()
        self._worker_task = asyncio.create_task(worker.run(stop, self._worker_ready))
        self._worker_task.add_done_callback(self._pulse.fire)

        async def stop_worker(task: asyncio.Task[None]) -> None:
            stop.set()
            async with asyncio.timeout(STOP_WAIT_S):  # then it is cancelled
                await task

        stack.push_async_callback(stop_worker, self._worker_task)
        await self._pulse.until(
            lambda: self._check_running() or self._ready,
            "the worker to join its group and follow kills",
            READY_WAIT,
        )

    def _worker_ready(self) -> None:
        self._ready = True
        self._pulse.fire()

    def _attempt_ended(self, key: AttemptKey) -> None:
        self._ended.add(key)
        self._pulse.fire()

    def _check_running(self) -> None:
        """KitError if the worker or the reader stopped: nothing would come any more."""
        for what, task in (
            ("worker", self._worker_task),
            ("reader of results and logs", self._reader.task if self._reader else None),
        ):
            if task is not None and task.done():
                error = None if task.cancelled() else task.exception()
                raise KitError(
                    f"the test worker's {what} stopped" + (f": {error}" if error else "")
                ) from error

    def _task_type(self, name: str) -> str:
        if name in self._own:
            return name
        return self._own_aliases.get(name) or canonical_task_type(name)

    async def _send(self, topic: str, message: Message) -> RecordMetadata:
        """Publish `message` keyed by its execution id, as the executor does."""
        if self._producer is None:
            raise KitError("the test worker is not started: use `async with TestWorker(...)`")
        value = codec.encode(message)
        if len(value) > MAX_VALUE_BYTES:
            raise KitError(f"a {topic} message of {len(value)} bytes is over {MAX_VALUE_BYTES}")
        return await (await self._producer.send(topic, value, key=message.execution_id.encode()))

    async def _fence(self, execution_id: str) -> RecordMetadata:
        """A record on `logs` in the partition of `execution_id`'s lines, after those
        acknowledged so far (its acknowledgement gives its offset, right on any broker)."""
        if self._producer is None:
            raise KitError("the test worker is not started: use `async with TestWorker(...)`")
        return await (await self._producer.send(LOGS.name, FENCE, key=execution_id.encode()))

    async def start_task(
        self,
        task_type: str,
        properties: Mapping[str, Any],
        *,
        timeout: timedelta | None = None,
        attempt: int = 1,
    ) -> StartedTask:
        """Publish a request for one attempt of `task_type` (a name or alias: one of
        `connectors` or an installed type) and return at once; the handle waits for its
        log lines and result, or kills it. `properties`: as `run_task`'s."""
        if self._reader is None:
            raise KitError("the test worker is not started: use `async with TestWorker(...)`")
        execution_id = f"test-{uuid.uuid4().hex[:12]}"
        request = _request(
            self._task_type(task_type),
            properties,
            execution_id=execution_id,
            task_run_id=f"{execution_id}-run",
            attempt=attempt,
            timeout=timeout,
        )
        seen = self._reader.follow(request.task_run_id)
        await self._send(TASK_REQUESTS.name, request)
        limit = self._default_timeout if timeout is None else timeout
        return StartedTask(self, request, seen, limit + RESULT_SLACK)

    async def run_task(
        self,
        task_type: str,
        properties: Mapping[str, Any],
        *,
        timeout: timedelta | None = None,
        attempt: int = 1,
    ) -> TaskRun:
        """Run one attempt on the worker and return how it ended (see `start_task`).
        `timeout`: the task's `timeout` (default: the kit's `default_timeout`)."""
        started = await self.start_task(task_type, properties, timeout=timeout, attempt=attempt)
        return await started.result()


async def _close(stack: contextlib.AsyncExitStack, *, reported: bool) -> None:
    """Stop everything `stack` started; a failure raises, or is logged when an error is
    on its way already (the one the test should see)."""
    try:
        await stack.aclose()
    except Exception:
        if not reported:
            raise
        log.exception("the test worker did not stop cleanly")


class StartedTask:
    """One attempt published to the test worker: wait for its lines and end, or kill it."""

    def __init__(self, kit: TestWorker, request: TaskRequest, seen: _Seen, wait: timedelta) -> None:
        self._kit = kit
        self.request = request
        self._seen = seen
        self._wait = wait  # for the result: the task's time limit, and some
        self._run: TaskRun | None = None

    @property
    def _key(self) -> AttemptKey:
        return (self.request.task_run_id, self.request.attempt)

    async def wait_log(self, text: str, *, within: timedelta = DEFAULT_WAIT) -> str:
        """The first log line of the attempt that contains `text`; KitError if the attempt
        ends without one, or none came `within`."""

        def found() -> str | bool | None:
            self._kit._check_running()
            line = next((r.message for r in self._seen.logs if text in r.message), None)
            return line or self._key in self._kit._ended

        what = f"a log line of {self.request.type} containing {text!r}"
        line = await self._kit._pulse.until(found, what, within)
        if isinstance(line, str):
            return line
        run = await self.result()  # ended: read every line it logged, then look again
        line = next((message for message in run.messages if text in message), None)
        if line is None:
            raise KitError(f"the task ended {run.state} without {what}; it logged {run.messages}")
        return line

    async def result(self, *, within: timedelta | None = None) -> TaskRun:
        """How the attempt ended, once its final result came (not the RUNNING one), with
        every line it logged. `within`: default the task's time limit and 30 s."""
        if self._run is not None:
            return self._run
        kit, seen, attempt = self._kit, self._seen, self.request.attempt
        wait = self._wait if within is None else within

        def ended() -> TaskResult | None:
            kit._check_running()
            result = seen.result(attempt)
            # Done means acknowledged: every log line is on the broker, before the fence.
            return result if result is not None and self._key in kit._ended else None

        what = f"the result of {self.request.type} ({self.request.task_run_id})"
        result = await kit._pulse.until(ended, what, wait)
        # The result and the lines travel on two topics: read `logs` up to a fence sent
        # after the worker's acknowledgements, so no line is still on its way.
        fence = await kit._fence(self.request.execution_id)
        reader = kit._reader
        assert reader is not None  # started, or `_send` would have refused
        await kit._pulse.until(
            lambda: (
                kit._check_running() or reader.logs_read_to.get(fence.partition, 0) > fence.offset
            ),
            f"the log lines of {self.request.task_run_id}",
            DEFAULT_WAIT,
        )
        prefix = f"{self.request.task_run_id}:{attempt}:{result.run_id}:"
        self._run = TaskRun(
            state=result.state,
            outputs=result.outputs,
            error=result.error,
            logs=[(r.level, r.message) for r in seen.logs if r.id.startswith(prefix)],
            storage_dir=kit.storage_dir,
        )
        return self._run

    async def kill(self, *, within: timedelta = DEFAULT_WAIT) -> TaskRun:
        """Kill the attempt as a kill of its execution does (a `TaskKill` on
        `task-control`): the connector is cancelled, the run ends KILLED. An attempt
        that ended already keeps its end."""
        if self._seen.result(self.request.attempt) is None:
            kill = TaskKill(
                self.request.execution_id,
                self.request.task_run_id,
                self.request.attempt,
                datetime.now(UTC),
            )
            await self._kit._send(TASK_CONTROL.name, kill)
        return await self.result(within=within)
