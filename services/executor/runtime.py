"""The executor's I/O shell around the pure core: decode, load, advance, produce, store.

`process_batch` handles a batch of input events: one table read and one table write per
execution per batch (a big execution's are its header and the task runs that changed:
stored.py). Order matters for at-least-once delivery (docs/architecture.md):
1. advance every execution of the batch in memory;
2. produce every command and wait until the broker has them all;
3. only then write the new states to the table (and its changelog).
A crash before 3 replays the batch from the old states: the same commands again, with the
same ids, which consumers de-duplicate. A crash after 3 finds the events already applied,
and their commands already delivered. An I/O error in a batch stops the process (see
`app.py`): acking a batch we failed to apply would lose it.

An event the core cannot apply (a bug, an expression exhausting the stack or memory, a
command the wire format cannot carry) would fail the same way on every replay: it ends
its own execution FAILED (`Abort`) and the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from headrace import codec, metrics
from headrace.admission import StartRefused, admit
from headrace.core.advance import Carry, advance
from headrace.core.concurrency import answer_command
from headrace.core.context import secret_seed
from headrace.core.events import (
    Abort,
    Command,
    EmitLog,
    Event,
    KillTask,
    PublishEvent,
    RequestSlot,
    RequestTask,
    SendCommand,
    SetTimer,
    Start,
    StartExecution,
    TaskFinished,
    command_event,
)
from headrace.core.slots import FlowSlots, decide
from headrace.core.state import Execution, StateDecodeError, StateVersionError, Timer
from headrace.errors import CodecError, HeadraceError
from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow
from headrace.flow_log import FlowNotFound
from headrace.log_format import reset_handling, set_handling
from headrace.messages import (
    CommandKind,
    ExecutionCommand,
    ExecutionEvent,
    Message,
    SlotRequest,
    TaskKill,
    TaskResult,
    TriggerEvent,
)
from headrace.services.executor import stored
from headrace.services.executor.eviction import (
    DEFAULT_RETENTION,
    Tombstone,
    eviction_timer,
    evicts,
    is_tombstone,
    tombstone_if_due,
)
from headrace.services.executor.store import PartitionStore
from headrace.services.executor.stored import Record
from headrace.services.executor.timer_index import HeapIndex, TimerIndex
from headrace.services.executor.timers import TimerQueue
from headrace.services.executor.unheld import evicted, flow_unloadable, not_held
from headrace.topics import (
    EXECUTION_COMMANDS,
    EXECUTIONS,
    FLOW_SLOTS,
    LOGS,
    TASK_CONTROL,
    TASK_REQUESTS,
    TRIGGERS,
)
from headrace.topics.definitions import MAX_VALUE_BYTES

log = logging.getLogger(__name__)

# The table value of an execution killed before its start arrived: not a state (states
# start with their format version), so it cannot be mistaken for one.
KILLED_BEFORE_START = b"killed-before-start"

MAX_ABORT_REASON = 1_000  # characters of the error kept in the execution's log line
REBUILD_SLICE = 1_000  # states decoded between two turns of the event loop at recovery

# A step's `executions` event above this size is sent as several records of the same seq,
# so no record grows with the task runs one step changes (a for-each of 10,000 items
# creates them all in one step). Consumers fetch and decode it in pieces.
EVENT_SPLIT_BYTES = 64 * 1024


class FlowsBehind(HeadraceError):
    """An execution's own flow revision is not on the `flows` topic: an I/O failure, not
    a reason to drop its event."""


class Producer(Protocol):
    """Faust's producer: `send` enqueues and returns the delivery future."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[Any]: ...

    async def send_together(
        self, topic: str, partition: int, records: Sequence[tuple[bytes, bytes | None]]
    ) -> asyncio.Future[Any]:
        """Send `records` as one record batch: appended whole or not at all
        (`together.TogetherProducer`); the future resolves once the broker has them."""


class Flows(Protocol):
    """Flow revisions by id (`headrace.flow_log.FlowLog`)."""

    async def get(self, namespace: str, flow_id: str, revision: int) -> Flow: ...

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None: ...


@dataclass(frozen=True, slots=True)
class StateTable:
    """A Faust table as the runtime uses it: its store, and the changelog topic that a
    write must reach before the store (and then the input offsets) may take it."""

    store: PartitionStore
    changelog: str


@dataclass(slots=True)
class InputEvent:
    key: bytes
    value: bytes
    partition: int


@dataclass
class ExecutorRuntime:
    table: StateTable
    slots_table: StateTable
    flows: Flows
    producer: Producer
    # How long an ended execution's state is kept before its tombstone replaces it.
    retention: timedelta = DEFAULT_RETENTION
    # Where the two timer queues keep what is pending (timer_index.py).
    timer_index: TimerIndex = field(default_factory=HeapIndex)
    eviction_index: TimerIndex = field(default_factory=HeapIndex)
    timers: TimerQueue = field(init=False)
    evictions: TimerQueue = field(init=False)  # `TimerKind.EVICT` only (eviction.py)
    # Big executions as the last batch left them, decoded (stored.Decoded).
    decoded: stored.Decoded = field(default_factory=stored.Decoded)

    def __post_init__(self) -> None:
        self.timers = TimerQueue(self.fire_timer, self.timer_index)
        self.evictions = TimerQueue(self.fire_timer, self.eviction_index)

    async def process_batch(self, batch: Iterable[InputEvent]) -> None:
        started = time.perf_counter()
        events = 0
        by_execution: dict[bytes, tuple[int, list[Message]]] = {}
        for item in batch:
            events += 1
            try:
                message = codec.decode(item.value)
            except CodecError as exc:
                log.error("dropping undecodable message on partition %d: %s", item.partition, exc)
                continue
            by_execution.setdefault(item.key, (item.partition, []))[1].append(message)

        now = datetime.now(UTC)
        deliveries: list[asyncio.Future[Any]] = []
        changed: list[tuple[int, list[Record]]] = []  # partition, an execution's records
        # What this batch leaves of each execution, for `decoded`: key, the store's
        # generation when it was read, its header, the execution (None: nothing to keep)
        # and the sizes of its task runs' records.
        kept: list[tuple[bytes, int | None, bytes, Execution | None, list[int]]] = []
        handled = set_handling()  # log lines name the execution (headrace.log_format)
        for key, (partition, messages) in by_execution.items():
            set_handling(execution_id=key.decode())
            generation = self.table.store.generation
            raw = self.table.store.read(partition, key)
            killed_early = raw == KILLED_BEFORE_START
            tombstone: Tombstone | None = None
            execution: Execution | None = None
            sizes: list[int] = []  # of its task runs stored apart (stored.Loaded)
            try:
                if is_tombstone(raw):
                    tombstone = Tombstone.from_bytes(raw)
                elif raw and not killed_early:
                    loaded = stored.load(self.table.store, partition, key, raw, self.decoded)
                    execution, sizes = loaded.execution, loaded.sizes
            except StateVersionError:
                # A newer executor wrote it (rolling upgrade): dropping the events would
                # lose work that version can do. Fail the batch; the process exits.
                raise
            except StateDecodeError as exc:  # corrupt: every replay would fail here too
                log.error("execution %s: %s; %d events dropped", key.decode(), exc, len(messages))
                continue
            before = [] if execution is None else execution.task_runs  # never mutated
            was = None if execution is None else execution.state
            carry = Carry()  # from each event's step to the next of this execution
            for message in messages:
                if tombstone is not None:
                    for topic, record in evicted(message, tombstone, now):
                        deliveries.append(await self._produce(_encode(topic, record)))
                    continue
                if evicts(message):
                    if execution is not None:
                        tombstone = tombstone_if_due(execution, self.retention, now)
                    continue
                if execution is None and _is_kill(message):
                    # A parent's kill can overtake its child's start (two topics): remember
                    # it, so the start that follows is killed at once instead of running.
                    killed_early = True
                    await self._say_not_held(message, now, deliveries)
                    continue
                execution = await self._advance(key, execution, message, now, deliveries, carry)
                if killed_early and execution is not None and isinstance(message, TriggerEvent):
                    kill = ExecutionCommand(
                        command_id=f"killed-before-start:{message.execution_id}",
                        execution_id=message.execution_id,
                        kind=CommandKind.KILL,
                        time=now,
                    )
                    execution = await self._advance(key, execution, kill, now, deliveries)
                    killed_early = False
            if tombstone is not None:
                value = tombstone.to_bytes()
            elif execution is not None:
                metrics.count_execution(was, execution.state, execution.trigger)
                value = stored.state_bytes(execution)
                evict = eviction_timer(execution, self.retention)
                if evict is not None:
                    self.evictions.push(key.decode(), evict)
            elif killed_early:
                value = KILLED_BEFORE_START
            else:
                continue
            held = execution if tombstone is None else None
            runs = execution.task_runs if execution is not None and tombstone is None else []
            records = stored.task_run_records(key, before, len(sizes), runs)
            kept.append((key, generation, value, held, stored.sizes_after(sizes, records)))
            if value != raw:
                records.insert(0, (key, value))
            if records:
                changed.append((partition, records))
        reset_handling(handled)
        if deliveries:
            await asyncio.gather(*deliveries)
        await self._store(self.table, changed)
        # No await since the store's write: a rebalance since a read shows in `generation`.
        for key, generation, header, execution, run_sizes in kept:
            if execution is None or generation is None or generation != self.table.store.generation:
                self.decoded.forget(key)
            else:
                self.decoded.keep(key, header, generation, execution, run_sizes)
        metrics.EXECUTOR_BATCH_EVENTS.observe(events)
        metrics.EXECUTOR_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _advance(
        self,
        key: bytes,
        execution: Execution | None,
        message: Message,
        now: datetime,
        deliveries: list[asyncio.Future[Any]],
        carry: Carry | None = None,
    ) -> Execution | None:
        event = _core_event(message)
        if event is None:
            return execution
        try:
            flow = await self._flow_for(execution, message)
        except (FlowNotFound, FlowValidationError) as exc:
            log.error("execution %s: %s; event dropped", key.decode(), exc)
            for topic, record in flow_unloadable(message, execution, exc, now):
                deliveries.append(await self._produce(_encode(topic, record)))
            return execution
        if flow is None:
            await self._say_not_held(message, now, deliveries)
            return execution
        try:
            # Fresh per call, never published: it makes this call's secret markers
            # unforgeable (headrace.secret_markers).
            step_started = time.perf_counter()
            with secret_seed(secrets.token_hex(16)):
                step = advance(execution, event, flow, now, carry)
            metrics.EXECUTOR_STEP_SECONDS.observe(time.perf_counter() - step_started)
        except Exception as exc:  # the core does no I/O: whatever it raised, it will again
            return await self._abort(key, execution, message, flow, now, exc, deliveries)
        try:
            outbox = await self._encode_step(step.commands)
        except CodecError as exc:  # a command the wire format cannot carry: the same
            # Nothing of the step was sent: Abort from the pre-step state reuses its seq
            # numbers, and a half-sent step would make the indexer ignore the FAILED event.
            return await self._abort(key, execution, message, flow, now, exc, deliveries)
        deliveries += await self._send_step(outbox)
        return step.execution

    async def _say_not_held(
        self, message: Message, now: datetime, deliveries: list[asyncio.Future[Any]]
    ) -> None:
        """`message` is for an execution this executor holds no state for: say so in its
        log, and answer an operator's command UNKNOWN (`unheld`)."""
        log.warning(
            "execution %s: no state held; %s not applied",
            message.execution_id,
            getattr(message, "kind", None) or type(message).__name__,
        )
        for topic, record in not_held(message, now):
            deliveries.append(await self._produce(_encode(topic, record)))

    async def _abort(
        self,
        key: bytes,
        execution: Execution | None,
        message: Message,
        flow: Flow,
        now: datetime,
        error: Exception,
        deliveries: list[asyncio.Future[Any]],
    ) -> Execution | None:
        """`message` cannot be applied: end its execution FAILED rather than replay the
        batch forever; if even that fails, drop the message. I/O errors still propagate."""
        what = getattr(message, "kind", None) or type(message).__name__
        log.error(
            "execution %s: cannot apply %s; failing the execution",
            key.decode(),
            what,
            exc_info=error,
        )
        reason = f"internal error while applying {what}: {type(error).__name__}: {error}"
        trigger = message if isinstance(message, TriggerEvent) else None
        try:
            step = advance(execution, Abort(reason[:MAX_ABORT_REASON], trigger), flow, now)
        except Exception as exc:  # as above: it would fail again on every replay
            return _drop(key, execution, what, exc)
        try:
            outbox = await self._encode_step(step.commands)
        except CodecError as exc:
            return _drop(key, execution, what, exc)
        deliveries += await self._send_step(outbox)
        return step.execution

    async def _flow_for(self, execution: Execution | None, message: Message) -> Any:
        if execution is not None:
            namespace, flow_id = execution.namespace, execution.flow_id
            try:
                return await self.flows.get(namespace, flow_id, execution.flow_revision)
            except FlowNotFound as exc:
                # It ran on this revision, so the revision was stored: the topic is behind
                # (an upgrade whose gateways have not published it). Fail the batch: it
                # is replayed, and nothing is dropped.
                raise FlowsBehind(str(exc)) from exc
        if isinstance(message, TriggerEvent):
            return await self.flows.get(message.namespace, message.flow_id, message.flow_revision)
        return None

    async def _encode_step(self, commands: list[Command]) -> _Outbox:
        """Phase 1 of a step: encode every command, send none. A `CodecError` here leaves
        nothing of the step on the wire."""
        outbox = _Outbox()
        for command in commands:
            match command:
                case RequestTask(request=request):
                    outbox.records.append(_encode(TASK_REQUESTS.name, request))
                case PublishEvent(event=event):
                    outbox.records += _encode_event(event)
                case EmitLog(record=record):
                    outbox.records.append(_encode(LOGS.name, record))
                case SetTimer(execution_id=execution_id, timer=timer):
                    outbox.timers.append((execution_id, timer))
                case KillTask() as task_kill:
                    kill = TaskKill(
                        task_kill.execution_id,
                        task_kill.task_run_id,
                        task_kill.attempt,
                        datetime.now(UTC),
                        task_kill.run_id,
                    )
                    outbox.records.append(_encode(TASK_CONTROL.name, kill))
                case SendCommand(command=sent):
                    outbox.records.append(_encode(EXECUTION_COMMANDS.name, sent))
                case StartExecution(trigger=trigger):
                    outbox.records.append(await self._start_execution(trigger))
                case RequestSlot(request=slot_request):
                    outbox.records.append(_encode(FLOW_SLOTS.name, slot_request))
        return outbox

    async def _send_step(self, outbox: _Outbox) -> list[asyncio.Future[Any]]:
        """Phase 2 of a step: send what phase 1 encoded, in order; arm its timers."""
        deliveries = [await self._produce(record) for record in outbox.records]
        for execution_id, timer in outbox.timers:
            self.timers.push(execution_id, timer)
        return deliveries

    async def _start_execution(self, trigger: TriggerEvent) -> _Record:
        """Start another execution. A subflow's child is admitted as the gateway admits
        an API start (`headrace.admission`): revision 0 becomes the latest, inputs are
        typed and defaulted. A replay's start is the core's own, published as it is."""
        if trigger.trigger.get("type") != "subflow":
            return _encode(TRIGGERS.name, trigger)
        revision = trigger.flow_revision
        if revision == 0:
            revision = await self.flows.latest_revision(trigger.namespace, trigger.flow_id)
            if revision is None:
                return _child_refused(
                    trigger, f"flow {trigger.namespace}/{trigger.flow_id} not found"
                )
        try:
            flow = await self.flows.get(trigger.namespace, trigger.flow_id, revision)
        except (FlowNotFound, FlowValidationError) as exc:
            return _child_refused(trigger, f"cannot load the subflow: {exc}")
        try:
            start = admit(
                flow,
                revision,
                execution_id=trigger.execution_id,
                inputs=trigger.inputs,
                trigger=trigger.trigger,
                time=trigger.time,
                labels=trigger.labels,
            )
        except StartRefused as exc:
            return _child_refused(trigger, f"the subflow cannot start: {exc}")
        return _Record(TRIGGERS.name, trigger.execution_id.encode(), start.value)

    async def _send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        """Encode and enqueue one message; the future resolves once the broker has it."""
        return await self._produce(_encode(topic, message))

    async def _produce(self, record: _Record) -> asyncio.Future[Any]:
        return await self.producer.send(record.topic, record.key, record.value, None, None, None)

    async def _store(self, table: StateTable, changed: list[tuple[int, list[Record]]]) -> None:
        """Send new states to the changelog and, once the broker has every one, to the
        store (with their offsets: store.py). The records of one execution (a big one's
        header and task runs) go as one record batch: a recovery never reads half of
        them. Acknowledged before the batch is: the offset commit that follows does not
        look at failed sends (aiokafka's flush only waits).
        Through our producer, not Faust's `send_changelog`: Faust buffers those sends, and
        its flush before an offset commit gives up on the buffer after 100 ms of no
        progress, so an input could be committed while its state was still in that buffer
        (a crash then loses the execution)."""
        if not changed:
            return
        sent = []
        for partition, records in changed:
            if len(records) == 1:  # one record: whole by itself, in the shared batch
                ((key, value),) = records
                send = self.producer.send(table.changelog, key, value, partition, None, None)
            else:
                send = self.producer.send_together(table.changelog, partition, records)
            sent.append(await send)
        acks = await asyncio.gather(*sent)
        items: dict[int, list[Record]] = {}
        offsets: dict[int, int] = {}  # the highest acknowledged, by partition
        for (partition, records), ack in zip(changed, acks, strict=True):
            items.setdefault(partition, []).extend(records)
            # A record batch's is its first record's: recovery may read a few again.
            offset = getattr(ack, "offset", None)  # RecordMetadata
            if offset is not None:
                offsets[partition] = max(offset, offsets.get(partition, offset))
        for partition, written in items.items():
            table.store.write(partition, written, offsets.get(partition))

    async def process_slot_request(self, item: InputEvent) -> None:
        """One request of the flow-slots agent: decide, answer, then store (as for batches)."""
        try:
            request = codec.decode(item.value)
        except CodecError as exc:
            log.error("dropping undecodable slot request: %s", exc)
            return
        if not isinstance(request, SlotRequest):
            log.error("dropping a %s found on flow-slots", type(request).__name__)
            return
        raw = self.slots_table.store.read(item.partition, item.key)
        step = decide(FlowSlots.from_bytes(raw) if raw is not None else None, request)
        deliveries = []
        for answer in step.answers:
            command = answer_command(answer, request)  # names the claim it answers
            deliveries.append(await self._send(EXECUTION_COMMANDS.name, command))
        if deliveries:
            await asyncio.gather(*deliveries)
        value = step.slots.to_bytes()
        if value != raw:
            await self._store(self.slots_table, [(item.partition, [(item.key, value)])])

    async def fire_timer(self, execution_id: str, timer: Timer) -> None:
        command = ExecutionCommand(
            command_id=f"timer:{execution_id}:{timer.task_run_id}:{timer.attempt}:{timer.kind}",
            execution_id=execution_id,
            kind=CommandKind.TIMER,
            time=datetime.now(UTC),
            task_run_id=timer.task_run_id,
            attempt=timer.attempt,
            payload={"timer": str(timer.kind)},
        )
        await (await self._send(EXECUTION_COMMANDS.name, command))

    async def rebuild_timers(self) -> int:
        """After recovery: index every pending timer held in the table (and only those).
        A corrupt state is skipped (it must not stop the recovery of the others); a state
        of a newer format raises `StateVersionError`, as in `process_batch`. Every held
        state is decoded: the loop is let go every `REBUILD_SLICE` of them, so that the
        consumer's heartbeats go on during a big table's rebuild."""
        self.timers.clear()
        self.evictions.clear()
        count = 0
        for held, (key, raw) in enumerate(self.table.store.items(), start=1):
            if held % REBUILD_SLICE == 0:
                await asyncio.sleep(0)
            if raw == KILLED_BEFORE_START or is_tombstone(raw) or stored.is_task_run_key(key):
                continue  # no state, no timers (a header holds them)
            try:
                execution, _ = Execution.from_header(raw)
            except StateVersionError:
                raise
            except StateDecodeError as exc:
                log.error("execution %s: %s; its timers are not recovered", key.decode(), exc)
                continue
            for timer in execution.timers:
                self.timers.push(key.decode(), timer)
                count += 1
            evict = eviction_timer(execution, self.retention)
            if evict is not None:
                self.evictions.push(key.decode(), evict)
        return count


@dataclass(frozen=True, slots=True)
class _Record:
    topic: str
    key: bytes
    value: bytes


@dataclass(slots=True)
class _Outbox:
    """A step's effects, encoded and not yet sent."""

    records: list[_Record] = field(default_factory=list)
    timers: list[tuple[str, Timer]] = field(default_factory=list)


def _encode(topic: str, message: Message) -> _Record:
    """Raises `CodecError` for a value the wire format cannot carry."""
    # Every topic is keyed by execution id, but flow-slots, keyed by flow.
    key = message.flow_key if isinstance(message, SlotRequest) else message.execution_id
    value = codec.encode(message)
    # The producer takes records up to MAX_STATE_BYTES (for the state table), but these
    # topics take about 1 MiB: refused here, the step aborts instead of failing the batch.
    if len(value) > MAX_VALUE_BYTES:
        raise CodecError(f"a {topic} message of {len(value)} bytes is over {MAX_VALUE_BYTES}")
    return _Record(topic, key.encode(), value)


def _encode_event(event: ExecutionEvent) -> list[_Record]:
    """A step's event as records of at most `EVENT_SPLIT_BYTES` each, the execution's
    snapshot in the last (a consumer that sees it ended has seen its task runs); the
    snapshot or a task run alone may take up to `MAX_VALUE_BYTES`. Raises `CodecError`
    when one cannot be carried at all."""
    value = codec.encode(event)
    runs = event.task_runs
    pieces = len(runs) + (event.execution is not None)
    if len(value) <= EVENT_SPLIT_BYTES or pieces < 2:
        if len(value) > MAX_VALUE_BYTES:
            raise CodecError(
                f"an executions message of {len(value)} bytes is over {MAX_VALUE_BYTES}"
            )
        return [_Record(EXECUTIONS.name, event.execution_id.encode(), value)]
    if len(runs) < 2:  # the snapshot and one task run: each on its own
        parts = [
            dataclasses.replace(event, execution=None),
            dataclasses.replace(event, task_runs=[]),
        ]
    else:
        # Aim below the limit by the average run's size; a part still too big splits again.
        count = min(len(runs), -(-len(value) * 5 // (EVENT_SPLIT_BYTES * 4)))
        size = -(-len(runs) // count)
        starts = range(0, len(runs), size)
        parts = [
            dataclasses.replace(
                event,
                execution=event.execution if start == starts[-1] else None,
                task_runs=runs[start : start + size],
            )
            for start in starts
        ]
    return [record for part in parts for record in _encode_event(part)]


def _child_refused(trigger: TriggerEvent, reason: str) -> _Record:
    """A subflow's child cannot start: its parent task fails at once, saying why."""
    parent = trigger.trigger.get("parentExecutionId")
    log.warning("cannot start execution %s: %s", trigger.execution_id, reason)
    ended = ExecutionCommand(
        command_id=f"child-missing:{trigger.execution_id}",
        execution_id=parent,
        kind=CommandKind.CHILD_ENDED,
        time=datetime.now(UTC),
        task_run_id=trigger.trigger.get("parentTaskRunId"),
        payload={
            "childExecutionId": trigger.execution_id,
            "state": "FAILED",
            "outputs": {},
            "error": reason,
        },
    )
    return _encode(EXECUTION_COMMANDS.name, ended)


def _drop(key: bytes, execution: Execution | None, what: str, error: Exception) -> Execution | None:
    """The last resort for an event that cannot be applied nor failed: it is lost, the
    partition goes on."""
    log.error(
        "execution %s: cannot fail it either (%s: %s); %s dropped",
        key.decode(),
        type(error).__name__,
        error,
        what,
    )
    return execution


def _is_kill(message: Message) -> bool:
    return isinstance(message, ExecutionCommand) and message.kind is CommandKind.KILL


def _core_event(message: Message) -> Event | None:
    if isinstance(message, TriggerEvent):
        return Start(message)
    if isinstance(message, TaskResult):
        return TaskFinished(message)
    if isinstance(message, ExecutionCommand):
        return command_event(message)
    log.warning("the executor does not consume %s messages", type(message).__name__)
    return None
