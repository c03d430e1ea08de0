"""One tick of a schedule trigger as the start of its execution (pure).

The scheduler (live ticks) and the gateway (backfills) both build events here, so a
tick has the same execution id whoever publishes it, however often: the id is derived
from (namespace, flow id, trigger id, tick instant in UTC), and the executor ignores a
start for an execution it already has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from headrace.admission import Admitted, admit
from headrace.core.ids import derive_id
from headrace.expressions import NOW_KEY, render_value
from headrace.flow.cron import CronSchedule, as_utc
from headrace.flow.model import Flow
from headrace.flow.schedule_conditions import conditions_hold
from headrace.flow.triggers import SCHEDULE, ScheduleTrigger, TriggerProperties


def tick_execution_id(namespace: str, flow_id: str, trigger_id: str, tick: datetime) -> str:
    return derive_id(namespace, flow_id, "schedule", trigger_id, as_utc(tick).isoformat())


def schedule_of(spec: ScheduleTrigger) -> CronSchedule:
    return CronSchedule(spec.croniter_cron, spec.timezone)


def tick_trigger(
    trigger_id: str, schedule: CronSchedule, tick: datetime, *, backfill: bool = False
) -> dict[str, Any]:
    """The execution's `trigger` (what `{{ trigger.date }}` reads); dates in the zone's offset."""
    previous = schedule.previous_before(tick)
    trigger: dict[str, Any] = {
        "type": SCHEDULE,
        "id": trigger_id,
        "date": schedule.local_iso(tick),
        "next": schedule.local_iso(schedule.next_after(tick)),
        "previous": schedule.local_iso(previous) if previous is not None else None,
    }
    if backfill:
        trigger["backfill"] = True
    return trigger


def tick_context(
    flow: Flow, revision: int, trigger: dict[str, Any], tick: datetime
) -> dict[str, Any]:
    """What a tick's `inputs` and `conditions` expressions read (`schedule` is Kestra's
    other name for the tick's dates)."""
    return {
        "trigger": trigger,
        "schedule": trigger,
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": revision},
        NOW_KEY: as_utc(tick),
    }


def tick_event(
    flow: Flow,
    revision: int,
    trigger_id: str,
    spec: ScheduleTrigger,
    tick: datetime,
    *,
    backfill: bool = False,
) -> Admitted | None:
    """The start of the execution of `tick`, or None when the trigger's `conditions`
    are false for it (the tick starts nothing).

    Raises `ExpressionError` (an input expression fails, or a condition cannot be
    evaluated: `ConditionError`) or `StartRefused` (the flow is disabled, the rendered
    inputs do not fit it, the start is too large).
    """
    schedule = schedule_of(spec)
    trigger = tick_trigger(trigger_id, schedule, tick, backfill=backfill)
    context = tick_context(flow, revision, trigger, tick)
    if spec.conditions and not conditions_hold(spec.conditions, context):
        return None
    rendered = render_value(dict(spec.inputs), context, "inputs")
    return admit(
        flow,
        revision,
        execution_id=tick_execution_id(flow.namespace, flow.id, trigger_id, tick),
        inputs=rendered,
        trigger=trigger,
        time=as_utc(tick),
        labels=rendered_labels(spec, context),
    )


def rendered_labels(spec: TriggerProperties, context: dict[str, Any]) -> dict[str, str]:
    """The trigger's `labels`, their values rendered with `context`, as text."""
    rendered = render_value(dict(spec.labels), context, "labels")
    return {key: str(value) for key, value in rendered.items()}
