"""Turn "this trigger fired" into a `TriggerEvent` on `triggers`, with a derived id.

Every scheduler component (schedules, flow triggers, Kafka triggers) starts executions
through here. The execution id is a hash of the declared trigger and of what fired it
(a tick, an upstream execution, a topic offset), never random: publishing the same
cause twice — after a crash between publish and offset commit, or from two schedulers —
names the same execution, and the executor ignores the second Start.

It must not decide *whether* to fire: callers do; it only renders the trigger's
`inputs` (expressions over `trigger`), has the start admitted (`headrace.admission`),
and publishes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from headrace import codec
from headrace.admission import StartRefused, admit
from headrace.core.ids import derive_id
from headrace.errors import CodecError, HeadraceError
from headrace.expressions import ExpressionError, render_value
from headrace.flow.schedule_ticks import rendered_labels
from headrace.messages import TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.topics.definitions import MAX_VALUE_BYTES, TRIGGERS

log = logging.getLogger(__name__)


class TriggerStartError(HeadraceError):
    """A trigger fired but its `inputs` do not render or do not fit the flow."""


def trigger_execution_id(declared: DeclaredTrigger, cause: Sequence[str | int]) -> str:
    """The execution a trigger starts for `cause` (e.g. `("offset", topic, 0, 42)`).

    The flow revision is left out on purpose: a cause re-published after the flow
    changed is still the same execution.
    """
    namespace, flow_id, trigger_id = declared.key
    return derive_id("trigger", namespace, flow_id, trigger_id, *cause)


def build_start(
    declared: DeclaredTrigger,
    data: Mapping[str, Any],
    cause: Sequence[str | int],
    time: datetime,
    labels: Mapping[str, str] | None = None,
) -> TriggerEvent:
    """The Start for `declared` fired by `cause`; `data` becomes the execution's `trigger`.

    `data` gets `id` (the trigger's id) added. Raises `TriggerStartError` when the
    trigger's `inputs` cannot be rendered with `{"trigger": data}`, or `admit` refuses
    the start (inputs that do not fit the flow, a start too large for the topic).
    """
    trigger = {**data, "id": declared.trigger.id}
    where = f"{declared.flow.namespace}/{declared.flow.id} trigger {declared.trigger.id!r}"
    try:
        spec = declared.trigger.spec()
        raw = render_value(spec.inputs, {"trigger": trigger}, "inputs")
        own = rendered_labels(spec, {"trigger": trigger})
        start = admit(
            declared.flow,
            declared.revision,
            execution_id=trigger_execution_id(declared, cause),
            inputs=raw,
            trigger=trigger,
            time=time,
            labels={**own, **(labels or {})},
        )
    except (ExpressionError, StartRefused) as exc:
        raise TriggerStartError(f"{where}: {exc}") from exc
    return start.event


def try_build_start(
    declared: DeclaredTrigger,
    data: Mapping[str, Any],
    cause: Sequence[str | int],
    time: datetime,
    labels: Mapping[str, str] | None = None,
) -> TriggerEvent | None:
    """`build_start`, or None with an error log: a start that can never succeed is
    dropped (retrying the same cause would fail the same way)."""
    try:
        return build_start(declared, data, cause, time, labels)
    except TriggerStartError as exc:
        log.error("not starting an execution: %s", exc)
        return None


async def publish_starts(producer: AIOKafkaProducer, events: Iterable[TriggerEvent]) -> int:
    """Publish every event and return once the broker acknowledged all of them.

    Callers commit the offsets that caused these starts only after this returns. An
    event that can never be published is logged and skipped, as it would fail the same
    way every time and block the events behind it: one the wire format cannot carry
    (say, an integer beyond 64 bits in a message value), or one larger than `triggers`
    takes (`MAX_VALUE_BYTES`, refused here, or by the producer or the broker if they
    allow less). Any other failure raises: nothing is skipped for a broker outage.
    """
    pending: list[tuple[TriggerEvent, bytes, asyncio.Future[Any]]] = []
    for event in events:
        value = _encoded(event)
        if value is None:
            continue
        try:
            future = await producer.send(TRIGGERS.name, value, key=event.execution_id.encode())
        except MessageSizeTooLargeError as exc:  # over the producer's max_request_size
            _log_skipped(event, exc)
            continue
        pending.append((event, value, future))
    results = await asyncio.gather(*(future for _, _, future in pending), return_exceptions=True)
    published = 0
    refused: list[tuple[TriggerEvent, bytes]] = []
    for (event, value, _), result in zip(pending, results, strict=True):
        if isinstance(result, MessageSizeTooLargeError):
            refused.append((event, value))
        elif isinstance(result, BaseException):
            raise result
        else:
            published += 1
    # The broker refuses a whole record batch: send each refused event on its own, so
    # that only those too large by themselves are skipped.
    for event, value in refused:
        try:
            await producer.send_and_wait(TRIGGERS.name, value, key=event.execution_id.encode())
        except MessageSizeTooLargeError as exc:
            _log_skipped(event, exc)
        else:
            published += 1
    return published


def _encoded(event: TriggerEvent) -> bytes | None:
    """The event's value, or None (logged) when it can never be published."""
    try:
        value = codec.encode(event)
    except CodecError as exc:
        _log_skipped(event, exc)
        return None
    if len(value) > MAX_VALUE_BYTES:
        _log_skipped(
            event,
            f"the start is {len(value)} bytes, over the {MAX_VALUE_BYTES} the "
            f"{TRIGGERS.name} topic takes; copy less of the trigger into the inputs",
        )
        return None
    return value


def _log_skipped(event: TriggerEvent, reason: object) -> None:
    log.error(
        "not starting %s/%s (execution %s): %s",
        event.namespace,
        event.flow_id,
        event.execution_id,
        reason,
    )
