"""`/api/v1/triggers`: the declared triggers with their runtime state, the runtime
on/off switch, and schedule backfills.

A backfill publishes one `TriggerEvent` per tick of [start, end) with the ids the
scheduler would use for those ticks (`headrace.flow.schedule_ticks`): running it twice,
or over ticks the scheduler already fired, starts nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from aiokafka.errors import KafkaError

from headrace import codec
from headrace.admission import StartRefused
from headrace.db.triggers import TriggerState, TriggerStateRepository
from headrace.expressions import ExpressionError
from headrace.flow.cron import CronError
from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow, Trigger
from headrace.flow.schedule_ticks import schedule_of, tick_event
from headrace.flow.triggers import SCHEDULE, ScheduleTrigger
from headrace.flow_log import unique_key
from headrace.flow_store import FlowsUnavailable
from headrace.messages import FlowRevision, TriggerSwitch
from headrace.services.gateway.bodies import read_json_object
from headrace.services.gateway.context import Gateway, gateway
from headrace.services.gateway.executions_api import refused
from headrace.services.gateway.responses import ApiError, json_response
from headrace.topics.definitions import FLOWS, TRIGGERS

# Ticks one backfill request may publish; a larger range is refused (split it).
MAX_BACKFILL_TICKS = 10_000
# Sends between two yields to the event loop (~5 ms of work).
PUBLISH_SLICE = 100
# The most work one backfill may take: 10,000 ticks take ~6 s of CPU on an idle machine.
BACKFILL_S = 60.0
# No schedule ticked before the Unix epoch; earlier dates could not even be stepped back
# by a microsecond at year 1 (the overflow that made `0001-01-01` a 500).
EARLIEST_BACKFILL = datetime(1970, 1, 1, tzinfo=UTC)


async def _load(gw: Gateway, record: FlowRevision) -> Flow | None:
    try:
        name = f"{record.namespace}/{record.flow_id}@{record.revision}"
        return await gw.flow_loader.load(record.source, name)
    except FlowValidationError:
        return None  # stored before a stricter validator: it declares nothing we can run


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


async def _last_fired(gw: Gateway, flow: Flow, trigger: Trigger) -> tuple[str, datetime] | None:
    """The newest execution this trigger started (any kind of trigger), from the index."""
    row = await gw.pool.fetchrow(
        "SELECT id, created_at FROM executions"
        " WHERE namespace = $1 AND flow_id = $2 AND trigger->>'id' = $3"
        " AND trigger->>'type' = $4 ORDER BY created_at DESC LIMIT 1",
        flow.namespace,
        flow.id,
        trigger.id,
        trigger.kind,
    )
    return None if row is None else (row["id"], row["created_at"])


def _trigger_json(
    flow: Flow,
    trigger: Trigger,
    state: TriggerState | None,
    last_fired: tuple[str, datetime] | None = None,
) -> dict[str, Any]:
    runtime_disabled = bool(state and state.disabled)
    item: dict[str, Any] = {
        "namespace": flow.namespace,
        "flowId": flow.id,
        "triggerId": trigger.id,
        "type": trigger.kind,
        "disabled": flow.disabled or trigger.disabled or runtime_disabled,
        "disabledInFlow": flow.disabled or trigger.disabled,
        "runtimeDisabled": runtime_disabled,
        "lastTick": _iso(state.last_tick) if state else None,
        "lastExecutionId": state.last_execution_id if state else None,
        "lastError": state.last_error if state else None,
        # What it last started as the index knows it (every kind; schedules also `lastTick`).
        "lastFiredAt": _iso(last_fired[1]) if last_fired else None,
        "lastFiredExecutionId": last_fired[0] if last_fired else None,
        "updatedAt": _iso(state.updated_at) if state else None,
        "stopAfter": [str(end) for end in trigger.spec().stop_after],
        "stoppedAfter": _stopped_after(state),
    }
    if trigger.kind == SCHEDULE:
        spec = trigger.spec()
        assert isinstance(spec, ScheduleTrigger)
        item["cron"], item["timezone"] = spec.cron, spec.timezone
        item["withSeconds"] = spec.with_seconds
        item["nextTick"] = None
        if not item["disabled"]:
            # From the watermark, not the stored next_tick: a switch or a cron edit moves it.
            since = state.last_tick if state and state.last_tick else datetime.now(UTC)
            with contextlib.suppress(CronError):  # a stored cron that names no date
                item["nextTick"] = _iso(schedule_of(spec).next_after(since))
    return item


def _stopped_after(state: TriggerState | None) -> dict[str, Any] | None:
    """Why `stopAfter` switched the trigger off (None: it did not, or it is on again)."""
    if state is None or not state.disabled or state.stopped_state is None:
        return None
    return {
        "state": state.stopped_state,
        "executionId": state.stopped_execution_id,
        "at": _iso(state.stopped_at),
    }


async def list_triggers(request: web.Request) -> web.Response:
    gw = gateway(request)
    namespace = request.query.get("namespace") or None
    flow_id = request.query.get("flowId") or None
    states = await TriggerStateRepository(gw.pool).list(namespace, flow_id)
    results = []
    for record in gw.flows.list(namespace):
        if flow_id is not None and record.flow_id != flow_id:
            continue
        flow = await _load(gw, record)
        if flow is None:
            continue
        for trigger in flow.triggers:
            key = (flow.namespace, flow.id, trigger.id)
            fired = await _last_fired(gw, flow, trigger)
            results.append(_trigger_json(flow, trigger, states.get(key), fired))
    return json_response({"results": results, "total": len(results)})


async def _declared(gw: Gateway, request: web.Request) -> tuple[FlowRevision, Flow, Trigger]:
    namespace, flow_id = request.match_info["namespace"], request.match_info["flowId"]
    trigger_id = request.match_info["triggerId"]
    try:
        record = await gw.flows.find(namespace, flow_id)
    except FlowsUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    if record is None:
        raise ApiError(404, f"flow {namespace}/{flow_id} not found")
    flow = await _load(gw, record)
    if flow is None:
        raise ApiError(422, f"the stored flow {namespace}/{flow_id} no longer validates")
    trigger = next((t for t in flow.triggers if t.id == trigger_id), None)
    if trigger is None:
        known = ", ".join(t.id for t in flow.triggers) or "none"
        raise ApiError(
            404, f"flow {namespace}/{flow_id} has no trigger {trigger_id!r} (triggers: {known})"
        )
    return record, flow, trigger


async def set_trigger(request: web.Request) -> web.Response:
    """`PUT {"disabled": true|false}`: the runtime switch every scheduler honours."""
    gw = gateway(request)
    _, flow, trigger = await _declared(gw, request)
    body = await read_json_object(request)
    disabled = body.get("disabled")
    if not isinstance(disabled, bool):
        raise ApiError(400, 'expected {"disabled": true} or {"disabled": false}')
    key = (flow.namespace, flow.id, trigger.id)
    state = await TriggerStateRepository(gw.pool).set_disabled(key, disabled, datetime.now(UTC))
    # Stored first (the watermark moves with it), then on the `flows` topic, which the
    # webhooks read: a refused publish is a 503, and sending the same switch again is safe.
    switch = TriggerSwitch(*key, disabled, state.updated_at)  # its version: flow_log.py
    try:
        await gw.producer.send_and_wait(FLOWS.name, codec.encode(switch), key=unique_key(switch))
    except KafkaError as exc:
        raise ApiError(
            503, f"the switch is stored, but the broker did not take it (send it again): {exc}"
        ) from exc
    gw.flow_log.note(switch)
    return json_response(_trigger_json(flow, trigger, state, await _last_fired(gw, flow, trigger)))


def _moment(body: dict[str, Any], name: str, zone: ZoneInfo) -> datetime:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApiError(400, f"{name!r} must be an ISO-8601 date-time, e.g. 2024-03-01T00:00:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ApiError(400, f"{name!r} is not an ISO-8601 date-time: {value!r}") from exc
    # Without an offset, the time is read on the trigger's wall clock.
    moment = moment.replace(tzinfo=zone) if moment.tzinfo is None else moment
    try:
        in_utc = moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of UTC is in year 0
        in_utc = None
    if in_utc is None or in_utc < EARLIEST_BACKFILL:
        raise ApiError(
            400, f"{name!r} must be after {EARLIEST_BACKFILL.isoformat()}, got {value!r}"
        )
    return moment


async def backfill(request: web.Request) -> web.Response:
    """`POST {"start": ISO, "end": ISO}`: start every tick of [start, end)."""
    gw = gateway(request)
    record, flow, trigger = await _declared(gw, request)
    if trigger.kind != SCHEDULE:
        raise ApiError(
            400, f"trigger {trigger.id!r} is a {trigger.kind} trigger; only schedules backfill"
        )
    if flow.disabled:
        raise ApiError(409, f"flow {flow.namespace}/{flow.id} is disabled")
    spec = trigger.spec()
    assert isinstance(spec, ScheduleTrigger)
    schedule = schedule_of(spec)
    body = await read_json_object(request)
    start = _moment(body, "start", schedule.zone)
    end = _moment(body, "end", schedule.zone)
    if end <= start:
        raise ApiError(400, "'end' must be after 'start'")
    if end > datetime.now(UTC):
        # A future tick started now would take its id, and the on-time run be ignored.
        raise ApiError(400, "'end' is in the future: a backfill covers past ticks only")
    # Up to 10,000 ticks to compute, render and encode: seconds of CPU, in the pool.
    outcome = await gw.flow_loader.run(
        backfill_messages, flow, record.revision, trigger.id, start, end, timeout_s=BACKFILL_S
    )
    if isinstance(outcome, Refusal):
        raise ApiError(outcome.status, outcome.message, outcome.errors)
    await _publish_all(gw, outcome)
    return json_response(
        {
            "namespace": flow.namespace,
            "flowId": flow.id,
            "triggerId": trigger.id,
            "count": len(outcome),
            "executionIds": [execution_id for execution_id, _ in outcome],
        }
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a backfill cannot be made, as plain values (it crosses a process boundary)."""

    status: int
    message: str
    errors: list[dict[str, Any]] | None = None


def backfill_messages(
    flow: Flow, revision: int, trigger_id: str, start: datetime, end: datetime
) -> list[tuple[str, bytes]] | Refusal:
    """In a worker process: (execution id, encoded TriggerEvent) for every tick of
    [start, end), or why not."""
    trigger = next(t for t in flow.triggers if t.id == trigger_id)
    spec = trigger.spec()
    assert isinstance(spec, ScheduleTrigger)
    just_before = timedelta(microseconds=1)
    ticks = schedule_of(spec).ticks(start - just_before, end - just_before, MAX_BACKFILL_TICKS + 1)
    if len(ticks) > MAX_BACKFILL_TICKS:
        return Refusal(
            400,
            f"the range holds more than {MAX_BACKFILL_TICKS} ticks; backfill it in smaller ranges",
        )
    messages = []
    for tick in ticks:
        try:
            admitted = tick_event(flow, revision, trigger.id, spec, tick, backfill=True)
        except StartRefused as exc:
            answer = refused(exc)
            return Refusal(
                answer.status, f"cannot start tick {tick.isoformat()}: {answer}", answer.errors
            )
        except ExpressionError as exc:
            return Refusal(
                422,
                f"the trigger's inputs or conditions do not render for tick {tick.isoformat()}:"
                f" {exc}",
            )
        if admitted is not None:  # None: the trigger's conditions are false for this tick
            messages.append((admitted.event.execution_id, admitted.value))
    return messages


async def _publish_all(gw: Gateway, messages: list[tuple[str, bytes]]) -> None:
    """Send every message, then await every ack: a 200 means they are all on the topic."""
    try:
        acks = []
        for i, (execution_id, value) in enumerate(messages, 1):
            acks.append(await gw.producer.send(TRIGGERS.name, value, key=execution_id.encode()))
            if i % PUBLISH_SLICE == 0:
                await asyncio.sleep(0)  # a send seldom yields: let other requests in
        await asyncio.gather(*acks)
    except KafkaError as exc:
        raise ApiError(503, f"the broker did not accept the events: {exc}") from exc


def add_routes(app: web.Application, prefix: str) -> None:
    app.router.add_get(f"{prefix}/triggers", list_triggers)
    base = prefix + "/triggers/{namespace}/{flowId}/{triggerId}"
    app.router.add_put(base, set_trigger)
    app.router.add_post(base + "/backfill", backfill)
