"""The executor's I/O shell around the pure core: decode, load, advance, store, produce.

`process_batch` handles a batch of input events: one table read and one table write per
execution per batch. Produces are handed to Faust's producer and not awaited one by one:
Faust flushes its producer before every offset commit, so an input offset is committed
only once everything it caused is on the broker (at-least-once: a crash replays from the
last commit; the core ignores what it has already seen). A failed produce stops the
executor before the next batch, so the batch is replayed rather than lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from headrace import codec
from headrace.core.advance import advance
from headrace.core.events import (
    Command,
    EmitLog,
    Event,
    PublishEvent,
    RequestTask,
    SetTimer,
    Start,
    TaskFinished,
    TimerFired,
)
from headrace.core.state import Execution, Timer
from headrace.errors import CodecError, HeadraceError
from headrace.messages import (
    CommandKind,
    ExecutionCommand,
    Message,
    TaskResult,
    TriggerEvent,
)
from headrace.services.executor.flows import FlowCache, FlowNotFound
from headrace.services.executor.timers import TimerQueue
from headrace.topics import EXECUTION_COMMANDS, EXECUTIONS, LOGS, TASK_REQUESTS

log = logging.getLogger(__name__)


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


class ProduceFailed(HeadraceError):
    """A message the executor produced was not accepted by the broker."""


class StateTable(Protocol):
    """What we need of the Faust table: its store and an explicit-partition changelog."""

    data: MutableMapping[bytes, bytes]

    def send_changelog(self, partition: int | None, key: Any, value: Any) -> Any: ...


@dataclass(slots=True)
class InputEvent:
    key: bytes
    value: bytes
    partition: int


@dataclass
class ExecutorRuntime:
    table: StateTable
    flows: FlowCache
    producer: Producer
    timers: TimerQueue = field(init=False)
    processed: int = 0
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self.timers = TimerQueue(self.fire_timer)

    async def process_batch(self, batch: Iterable[InputEvent]) -> None:
        if self.failure is not None:
            raise ProduceFailed(f"a produce failed; stopping to replay: {self.failure}")
        by_execution: dict[bytes, tuple[int, list[Message]]] = {}
        for item in batch:
            try:
                message = codec.decode(item.value)
            except CodecError as exc:
                log.error("dropping undecodable message on partition %d: %s", item.partition, exc)
                continue
            by_execution.setdefault(item.key, (item.partition, []))[1].append(message)

        now = datetime.now(UTC)
        for key, (partition, messages) in by_execution.items():
            raw = self.table.data.get(key)
            before = Execution.from_bytes(raw) if raw is not None else None
            execution = before
            for message in messages:
                event = _core_event(message)
                if event is None:
                    continue
                try:
                    flow = await self._flow_for(execution, message)
                except FlowNotFound as exc:
                    log.error("execution %s: %s; event dropped", key.decode(), exc)
                    continue
                if flow is None:
                    log.warning("execution %s unknown here; %s dropped", key.decode(), event)
                    continue
                step = advance(execution, event, flow, now)
                execution = step.execution
                await self._apply(step.commands)
                self.processed += 1
            if execution is not None and execution is not before:
                value = execution.to_bytes()
                if value != raw:
                    self.table.data[key] = value
                    self.table.send_changelog(partition, key, value)

    async def _flow_for(self, execution: Execution | None, message: Message) -> Any:
        if execution is not None:
            return await self.flows.get(
                execution.namespace, execution.flow_id, execution.flow_revision
            )
        if isinstance(message, TriggerEvent):
            return await self.flows.get(message.namespace, message.flow_id, message.flow_revision)
        return None

    async def _apply(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case RequestTask(request=request):
                    await self._send(TASK_REQUESTS.name, request)
                case PublishEvent(event=event):
                    await self._send(EXECUTIONS.name, event)
                case EmitLog(record=record):
                    await self._send(LOGS.name, record)
                case SetTimer(execution_id=execution_id, timer=timer):
                    self.timers.push(execution_id, timer)

    async def _send(self, topic: str, message: Message) -> None:
        delivery = await self.producer.send(
            topic, message.execution_id.encode(), codec.encode(message), None, None, None
        )
        delivery.add_done_callback(self._check_delivery)

    def _check_delivery(self, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self.failure = delivery.exception()
            log.critical("produce failed: %s; the executor stops at the next batch", self.failure)

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
        await self._send(EXECUTION_COMMANDS.name, command)

    def rebuild_timers(self) -> int:
        """After recovery: index every pending timer held in the table."""
        count = 0
        for key, raw in list(self.table.data.items()):
            execution = Execution.from_bytes(raw)
            for timer in execution.timers:
                self.timers.push(key.decode(), timer)
                count += 1
        return count


def _core_event(message: Message) -> Event | None:
    if isinstance(message, TriggerEvent):
        return Start(message)
    if isinstance(message, TaskResult):
        return TaskFinished(message)
    if isinstance(message, ExecutionCommand) and message.kind is CommandKind.TIMER:
        return TimerFired(message)
    log.warning("executor ignores %s messages for now", type(message).__name__)
    return None
