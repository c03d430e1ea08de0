"""The executor's I/O shell around the pure core: decode, load, advance, store, produce.

`process_batch` handles a batch of input events: one table read and one table write per
execution per batch, all produces of the batch awaited together before Faust may commit
the batch's offsets (at-least-once: a crash replays the batch; the core ignores what it
has already seen).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

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
from headrace.errors import CodecError
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
    producer: AIOKafkaProducer
    timers: TimerQueue = field(init=False)
    processed: int = 0

    def __post_init__(self) -> None:
        self.timers = TimerQueue(self.fire_timer)

    async def process_batch(self, batch: Iterable[InputEvent]) -> None:
        by_execution: dict[bytes, tuple[int, list[Message]]] = {}
        for item in batch:
            try:
                message = codec.decode(item.value)
            except CodecError as exc:
                log.error("dropping undecodable message on partition %d: %s", item.partition, exc)
                continue
            by_execution.setdefault(item.key, (item.partition, []))[1].append(message)

        sends: list[asyncio.Future[Any]] = []
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
                sends += await self._apply(step.commands)
                self.processed += 1
            if execution is not None and execution is not before:
                value = execution.to_bytes()
                if value != raw:
                    self.table.data[key] = value
                    self.table.send_changelog(partition, key, value)
        if sends:
            await asyncio.gather(*sends)

    async def _flow_for(self, execution: Execution | None, message: Message) -> Any:
        if execution is not None:
            return await self.flows.get(
                execution.namespace, execution.flow_id, execution.flow_revision
            )
        if isinstance(message, TriggerEvent):
            return await self.flows.get(message.namespace, message.flow_id, message.flow_revision)
        return None

    async def _apply(self, commands: list[Command]) -> list[asyncio.Future[Any]]:
        sends = []
        for command in commands:
            match command:
                case RequestTask(request=request):
                    sends.append(await self._send(TASK_REQUESTS.name, request))
                case PublishEvent(event=event):
                    sends.append(await self._send(EXECUTIONS.name, event))
                case EmitLog(record=record):
                    sends.append(await self._send(LOGS.name, record))
                case SetTimer(execution_id=execution_id, timer=timer):
                    self.timers.push(execution_id, timer)
        return sends

    async def _send(self, topic: str, message: Message) -> asyncio.Future[Any]:
        return await self.producer.send(
            topic, codec.encode(message), key=message.execution_id.encode()
        )

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
