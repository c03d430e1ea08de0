"""Schedule, webhook and flow triggers as Kestra writes them, without I/O: `withSeconds`
(seconds first), schedule conditions, `lateMaximumDelay`, `stopAfter`, short webhook
keys, Kestra's webhook and flow-trigger conditions."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headrace.expressions import ExpressionError
from headrace.flow.cron import MissedPolicy, plan_due
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow, load_flow_with_warnings
from headrace.flow.model import Flow
from headrace.flow.schedule_ticks import schedule_of, tick_event
from headrace.flow.triggers import ScheduleTrigger, WebhookTrigger
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.flow_triggers import met_conditions, starts_for
from headrace.services.scheduler.stop_after import Stop, stops_for
from headrace.states import State

T0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday


def flow_with(trigger: str, inputs: str = "") -> str:
    return f"""
id: f
namespace: company.team
{inputs}
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: hi
triggers:
{trigger}
"""


def schedule(cron: str, extra: str = "") -> str:
    return flow_with(
        f"""  - id: s
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "{cron}"
{extra}"""
    )


def spec_of(flow: Flow) -> ScheduleTrigger:
    spec = flow.triggers[0].spec()
    assert isinstance(spec, ScheduleTrigger)
    return spec


def refusal(source: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(source)
    return [(e.path, e.line, e.message) for e in caught.value.errors]


# ------------------------------------------------------------------ withSeconds


def test_with_seconds_reads_the_first_field_as_seconds() -> None:
    spec = spec_of(load_flow(schedule("*/2 * * * * *", "    withSeconds: true")))
    ticks = schedule_of(spec).ticks(T0, T0 + timedelta(seconds=7), 10)
    assert [t.second for t in ticks] == [2, 4, 6]
    # 30 seconds past minute 0 of each hour: the seconds are first, the minutes second.
    spec = spec_of(load_flow(schedule("30 0 * * * *", "    withSeconds: true")))
    ticks = schedule_of(spec).ticks(T0, T0 + timedelta(hours=2), 10)
    assert ticks == [T0 + timedelta(seconds=30), T0 + timedelta(hours=1, seconds=30)]


def test_six_fields_without_with_seconds_are_refused_with_the_fix() -> None:
    [(path, line, message)] = refusal(schedule("*/2 * * * * *"))
    assert (path, line) == ("triggers[0].cron", 12)
    assert "six fields: set `withSeconds: true` and put the seconds first" in message


def test_with_seconds_needs_six_fields_and_five_fields_keep_working() -> None:
    [(path, _, message)] = refusal(schedule("*/5 * * * *", "    withSeconds: true"))
    assert path == "triggers[0].cron" and "needs six fields" in message
    spec = spec_of(load_flow(schedule("*/5 * * * *")))
    assert spec.with_seconds is False and spec.croniter_cron == "*/5 * * * *"
    assert spec_of(load_flow(schedule("@hourly", "    withSeconds: true"))).croniter_cron == (
        "@hourly"
    )


# ------------------------------------------------------------------ conditions


def fires(conditions: str, tick: datetime, timezone: str = "UTC") -> bool:
    source = schedule("0 11 * * *", f"    timezone: {timezone}\n    conditions:\n{conditions}")
    flow = load_flow(source)
    return tick_event(flow, 1, "s", spec_of(flow), tick) is not None


MONDAY_11 = datetime(2024, 1, 1, 11, tzinfo=UTC)
SATURDAY_11 = datetime(2024, 1, 6, 11, tzinfo=UTC)


def test_day_week_under_every_kestra_name() -> None:
    for name in (
        "io.kestra.plugin.core.condition.DayWeek",
        "io.kestra.plugin.core.condition.DayWeekCondition",
        "io.kestra.core.models.conditions.types.DayWeekCondition",
    ):
        condition = f"      - type: {name}\n        dayOfWeek: MONDAY\n"
        assert fires(condition, MONDAY_11)
        assert not fires(condition, SATURDAY_11)


def test_the_date_is_read_in_the_trigger_s_time_zone() -> None:
    # 23:30 UTC on Monday is Tuesday in Tokyo.
    condition = (
        "      - type: io.kestra.plugin.core.condition.DayWeek\n        dayOfWeek: TUESDAY\n"
    )
    late_monday = datetime(2024, 1, 1, 23, 30, tzinfo=UTC)
    assert fires(condition, late_monday, "Asia/Tokyo")
    assert not fires(condition, late_monday)


@pytest.mark.parametrize(
    ("day", "which", "expected"),
    [
        (1, "FIRST", True),  # 2024-01-01 is the first Monday of January
        (8, "FIRST", False),
        (8, "SECOND", True),
        (22, "FOURTH", True),
        (29, "LAST", True),
        (22, "LAST", False),
    ],
)
def test_day_week_in_month(day: int, which: str, expected: bool) -> None:
    condition = (
        "      - type: io.kestra.plugin.core.condition.DayWeekInMonth\n"
        f"        dayOfWeek: MONDAY\n        dayInMonth: {which}\n"
    )
    assert fires(condition, datetime(2024, 1, day, 11, tzinfo=UTC)) is expected


def test_weekend_not_and_or() -> None:
    weekend = "      - type: io.kestra.plugin.core.condition.Weekend\n"
    assert fires(weekend, SATURDAY_11) and not fires(weekend, MONDAY_11)
    # Kestra's "work days": not a weekend, and not a Wednesday.
    workdays = (
        "      - type: io.kestra.plugin.core.condition.Not\n        conditions:\n"
        "          - type: io.kestra.plugin.core.condition.Weekend\n"
        "          - type: io.kestra.plugin.core.condition.DayWeek\n"
        "            dayOfWeek: WEDNESDAY\n"
    )
    assert fires(workdays, MONDAY_11)
    assert not fires(workdays, SATURDAY_11)
    assert not fires(workdays, datetime(2024, 1, 3, 11, tzinfo=UTC))
    either = (
        "      - type: io.kestra.plugin.core.condition.OrCondition\n        conditions:\n"
        "          - {type: io.kestra.plugin.core.condition.DayWeek, dayOfWeek: MONDAY}\n"
        "          - {type: io.kestra.plugin.core.condition.DayWeek, dayOfWeek: SUNDAY}\n"
    )
    assert fires(either, MONDAY_11) and not fires(either, SATURDAY_11)


def test_time_between_compares_with_offsets_and_excludes_its_bounds() -> None:
    condition = (
        "      - type: io.kestra.plugin.core.condition.TimeBetween\n"
        '        after: "16:00:00+02:00"\n        before: "20:00:00+02:00"\n'
    )
    assert fires(condition, datetime(2024, 1, 1, 14, 30, tzinfo=UTC))  # 16:30 at +02:00
    assert not fires(condition, datetime(2024, 1, 1, 14, 0, tzinfo=UTC))  # exactly after
    assert not fires(condition, datetime(2024, 1, 1, 18, 0, tzinfo=UTC))  # exactly before
    assert not fires(condition, datetime(2024, 1, 1, 11, 0, tzinfo=UTC))


def test_date_time_between_includes_its_bounds() -> None:
    condition = (
        "      - type: io.kestra.plugin.core.condition.DateTimeBetween\n"
        '        after: "2024-01-01T11:00:00Z"\n        before: "2024-01-02T11:00:00+00:00"\n'
    )
    assert fires(condition, MONDAY_11)
    assert fires(condition, MONDAY_11 + timedelta(days=1))
    assert not fires(condition, MONDAY_11 + timedelta(days=2))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("{{ trigger.date | date('%H') == '11' }}", True),
        ("{{ schedule.date | date('%H') == '12' }}", False),
        ("{{ 0 }}", True),  # Kestra: only blank or `false` is false
        ("   ", False),
        ("false", False),
    ],
)
def test_expression_condition_follows_kestra_s_truth(expression: str, expected: bool) -> None:
    condition = (
        "      - type: io.kestra.plugin.core.condition.Expression\n"
        f'        expression: "{expression}"\n'
    )
    assert fires(condition, MONDAY_11) is expected


def test_a_tick_that_meets_its_conditions_starts_with_its_inputs() -> None:
    source = schedule(
        "0 11 * * *",
        "    inputs:\n      day: \"{{ trigger.date | date('%A') }}\"\n"
        "    conditions:\n      - {type: io.kestra.plugin.core.condition.DayWeek,"
        " dayOfWeek: MONDAY}\n",
    ).replace("tasks:", "inputs:\n  - id: day\n    type: STRING\ntasks:")
    flow = load_flow(source)
    started = tick_event(flow, 1, "s", spec_of(flow), MONDAY_11)
    assert started is not None and started.event.inputs == {"day": "Monday"}


def test_a_condition_that_cannot_be_evaluated_is_an_expression_error() -> None:
    condition = (
        "      - type: io.kestra.plugin.core.condition.Weekend\n"
        "        date: \"{{ trigger.date | replace('-', '/') }}\"\n"
    )
    with pytest.raises(ExpressionError, match="conditions"):
        fires(condition, MONDAY_11)


def test_a_multiple_condition_on_a_schedule_is_named_as_no_schedule_condition() -> None:
    source = schedule(
        "0 11 * * *",
        "    conditions:\n"
        "      - type: io.kestra.plugin.core.condition.MultipleCondition\n"
        "        conditions: {}\n",
    )
    [(path, _, message)] = refusal(source)
    assert path == "triggers[0].conditions[0]"
    assert "MultipleCondition is not a schedule condition (Kestra's Schedule ignores it)" in message


def test_bad_conditions_are_refused_on_their_line() -> None:
    source = schedule(
        "0 11 * * *",
        "    conditions:\n"
        "      - type: io.kestra.plugin.core.condition.DayWeek\n"
        "        dayOfWeek: MONDAYS\n"
        "      - type: io.kestra.plugin.core.condition.ExecutionFlow\n"
        "        namespace: a\n"
        "        flowId: b\n"
        "      - type: io.kestra.plugin.core.condition.TimeBetween\n"
        '        after: "16:00:00"\n'
        "      - type: io.kestra.plugin.core.condition.Not\n"
        "        conditions:\n"
        "          - type: io.kestra.plugin.core.condition.DateTimeBetween\n",
    )
    errors = refusal(source)
    assert [(path, line) for path, line, _ in errors] == [
        ("triggers[0].conditions[0].dayOfWeek", 15),
        ("triggers[0].conditions[1]", 16),
        ("triggers[0].conditions[2].after", 20),
        ("triggers[0].conditions[3].conditions[0]", 23),
    ]
    messages = [message for _, _, message in errors]
    assert "is not a schedule condition (Kestra's Schedule ignores it)" in messages[1]
    assert "has no offset" in messages[2]
    assert "needs `after`, `before` or both" in messages[3]


# ------------------------------------------------------------------ lateMaximumDelay


def test_late_maximum_delay_skips_old_ticks_whatever_the_policy() -> None:
    every_minute = schedule_of(spec_of(load_flow(schedule("* * * * *"))))
    now = T0 + timedelta(minutes=10, seconds=5)
    plan = plan_due(
        every_minute,
        MissedPolicy.ALL,
        T0,
        now,
        late_after=timedelta(seconds=10),
        limit=100,
        max_delay=timedelta(minutes=3),
    )
    # Ticks 00:01 .. 00:07 are more than 3 minutes late; 00:08 .. 00:10 still fire.
    assert plan.fire == [T0 + timedelta(minutes=m) for m in (8, 9, 10)]
    assert plan.skipped_late == 7 and plan.advance_to == T0 + timedelta(minutes=10)
    # With every tick too late, the watermark still moves past them.
    plan = plan_due(
        every_minute,
        MissedPolicy.ALL,
        T0,
        now,
        late_after=timedelta(seconds=10),
        limit=100,
        max_delay=timedelta(seconds=1),
    )
    assert plan.fire == [] and plan.advance_to == T0 + timedelta(minutes=10)


# ------------------------------------------------------------------ stopAfter


def ended(
    flow_id: str, state: State, trigger: dict[str, str], execution_id: str = "e1"
) -> ExecutionEvent:
    snapshot = ExecutionSnapshot(
        namespace="company.team",
        flow_id=flow_id,
        flow_revision=1,
        state=state,
        histories=[StateChange(State.CREATED, T0), StateChange(state, T0)],
        inputs={},
        outputs={},
        labels={"team": "data"},
        trigger=trigger,
    )
    return ExecutionEvent(execution_id, 3, T0, execution=snapshot)


def declared(source: str) -> DeclaredTrigger:
    flow = load_flow(source)
    return DeclaredTrigger(flow, 1, flow.triggers[0])


def test_stop_after_names_the_trigger_whose_execution_ended_so() -> None:
    stopping = declared(schedule("0 9 * * *", "    stopAfter: [FAILED, KILLED]"))
    schedule_trigger = {"type": "schedule", "id": "s"}
    assert stops_for([ended("f", State.FAILED, schedule_trigger)], [stopping]) == [
        Stop(("company.team", "f", "s"), "FAILED", "e1")
    ]
    # Another end state, another trigger of the flow, another flow: no stop.
    assert stops_for([ended("f", State.SUCCESS, schedule_trigger)], [stopping]) == []
    assert stops_for([ended("f", State.FAILED, {"type": "api"})], [stopping]) == []
    assert stops_for([ended("f", State.FAILED, {"type": "webhook", "id": "s"})], [stopping]) == []
    assert stops_for([ended("g", State.FAILED, schedule_trigger)], [stopping]) == []


def test_an_end_retried_as_a_new_execution_stops_nothing_but_the_chains_last_does() -> None:
    """CREATE_NEW_EXECUTION marks the retried end (Kestra's RETRIED): not the chain's end."""
    stopping = declared(schedule("0 9 * * *", "    stopAfter: [FAILED]"))
    retried = {"type": "schedule", "id": "s", "retriedAs": "e2"}
    assert stops_for([ended("f", State.FAILED, retried)], [stopping]) == []
    last = {"type": "schedule", "id": "s", "retryOf": "e2", "attempt": 3}
    assert stops_for([ended("f", State.FAILED, last, "e3")], [stopping]) == [
        Stop(("company.team", "f", "s"), "FAILED", "e3")
    ]


def test_stop_after_takes_end_states_only() -> None:
    [(path, _, message)] = refusal(schedule("0 9 * * *", "    stopAfter: [RUNNING]"))
    assert path == "triggers[0].stopAfter"
    assert "RUNNING is not an end state" in message


# ------------------------------------------------------------------ webhooks


def webhook(extra: str, key: str = "4wjtkzwVGBM9yKnjm3yv8r") -> str:
    return flow_with(
        f"""  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: {key}
{extra}"""
    )


def test_a_short_webhook_key_loads_with_a_warning() -> None:
    flow, warnings = load_flow_with_warnings(webhook("", key="abc"))
    spec = flow.triggers[0].spec()
    assert isinstance(spec, WebhookTrigger) and spec.key == "abc"
    [warning] = warnings
    assert (warning.path, warning.line) == ("triggers[0].key", 12)
    assert "can be guessed" in warning.message and "16 characters" in warning.message
    assert load_flow_with_warnings(webhook(""))[1] == []


def test_kestra_s_expression_conditions_and_answer_options_on_a_webhook() -> None:
    flow, warnings = load_flow_with_warnings(
        webhook(
            "    wait: true\n    returnOutputs: true\n    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.Expression\n"
            "        expression: \"{{ trigger.body.hello == 'world' }}\"\n"
            "      - \"{{ trigger.headers['x-a'] == 'b' }}\"\n"
        )
    )
    spec = flow.triggers[0].spec()
    assert isinstance(spec, WebhookTrigger)
    assert spec.conditions == [
        "{{ trigger.body.hello == 'world' }}",
        "{{ trigger.headers['x-a'] == 'b' }}",
    ]
    assert [w.path for w in warnings] == ["triggers[0].wait"]
    assert "?wait=true" in warnings[0].message
    [(path, _, message)] = refusal(
        webhook("    conditions:\n      - type: io.kestra.plugin.core.condition.Weekend\n")
    )
    assert path == "triggers[0].conditions[0]" and "write the condition as an" in message


# ------------------------------------------------------------------ flow triggers


def flow_trigger(body: str) -> str:
    return flow_with(
        f"""  - id: after
    type: io.kestra.plugin.core.trigger.Flow
{body}"""
    )


def test_kestra_s_execution_conditions_start_a_flow_trigger() -> None:
    down = declared(
        flow_trigger(
            "    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.ExecutionFlowCondition\n"
            "        namespace: company.team\n        flowId: extract\n"
            "      - type: io.kestra.plugin.core.condition.ExecutionStatusCondition\n"
            "        in: [SUCCESS, WARNING]\n"
            "      - type: io.kestra.plugin.core.condition.ExecutionLabels\n"
            "        labels: [{key: team, value: data}]\n"
        )
    )
    api = {"type": "api"}
    [start] = starts_for(ended("extract", State.SUCCESS, api), [down], T0)
    assert start.flow_id == "f" and start.trigger["flowId"] == "extract"
    assert starts_for(ended("extract", State.FAILED, api), [down], T0) == []
    assert starts_for(ended("load", State.SUCCESS, api), [down], T0) == []


def test_flow_trigger_states_and_namespace_prefix() -> None:
    spec = declared(
        flow_trigger(
            "    states: [FAILED]\n    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.ExecutionNamespace\n"
            "        namespace: company\n        comparison: PREFIX\n"
        )
    ).trigger.spec()
    snapshot = ended("any", State.FAILED, {"type": "api"}).execution
    assert snapshot is not None
    assert met_conditions(spec, snapshot) == ["conditions"]  # type: ignore[arg-type]
    succeeded = ended("any", State.SUCCESS, {"type": "api"}).execution
    assert succeeded is not None and met_conditions(spec, succeeded) == []  # type: ignore[arg-type]


def test_flow_trigger_refusals_name_the_alternative() -> None:
    [(path, _, message)] = refusal(flow_trigger("    inputs: {}\n"))
    assert path == "triggers[0]" and "needs `preconditions`" in message
    [(path, _, message)] = refusal(
        flow_trigger(
            "    conditions:\n"
            "      - type: io.kestra.plugin.core.condition.MultipleCondition\n"
            "        window: P1D\n"
        )
    )
    assert path == "triggers[0].conditions[0]" and "preconditions.flows" in message


def test_flow_trigger_on_a_state_that_is_no_end_loads_with_a_warning() -> None:
    _, warnings = load_flow_with_warnings(
        flow_trigger(
            "    states: [RUNNING, FAILED]\n    conditions:\n"
            "      - {type: io.kestra.plugin.core.condition.ExecutionNamespace, namespace: a}\n"
        )
    )
    [warning] = warnings
    assert warning.path == "triggers[0].states" and "RUNNING never start" in warning.message


def test_kestra_s_deprecated_backfill_loads_with_a_warning() -> None:
    _, warnings = load_flow_with_warnings(
        schedule("0 2 * * *", '    backfill:\n      start: "2024-01-01T00:00:00Z"\n')
    )
    [warning] = warnings
    assert warning.path == "triggers[0].backfill"
    assert "headrace trigger backfill" in warning.message


def test_public_holiday_of_a_country_and_a_subdivision() -> None:
    france = "      - type: io.kestra.plugin.core.condition.PublicHoliday\n        country: FR\n"
    assert fires(france, datetime(2024, 7, 14, 11, tzinfo=UTC))
    assert not fires(france, datetime(2024, 7, 15, 11, tzinfo=UTC))
    # Kestra's "work days in France" example: neither a holiday nor a weekend.
    workdays = (
        "      - type: io.kestra.plugin.core.condition.Not\n        conditions:\n"
        "          - {type: io.kestra.plugin.core.condition.PublicHoliday, country: FR}\n"
        "          - type: io.kestra.plugin.core.condition.Weekend\n"
    )
    assert fires(workdays, datetime(2024, 7, 15, 11, tzinfo=UTC))
    assert not fires(workdays, datetime(2024, 7, 14, 11, tzinfo=UTC))
    # César Chávez Day is a California holiday, not a federal one.
    california = (
        "      - type: io.kestra.plugin.core.condition.PublicHolidayCondition\n"
        "        country: US\n        subDivision: CA\n"
    )
    assert fires(california, datetime(2024, 3, 31, 11, tzinfo=UTC))
    assert not fires(california.replace("CA", "NY"), datetime(2024, 3, 31, 11, tzinfo=UTC))


def test_an_unknown_holiday_calendar_is_refused() -> None:
    [(path, _, message)] = refusal(
        schedule(
            "0 11 * * *",
            "    conditions:\n"
            "      - {type: io.kestra.plugin.core.condition.PublicHoliday, country: XX}\n",
        )
    )
    assert path == "triggers[0].conditions[0]" and "no public holiday calendar" in message


def test_the_mask_readers_see_is_no_key() -> None:
    # A reader's view of a flow, applied by mistake, must not set a key everyone knows.
    from headrace.services.gateway.masking import MASK

    [(path, _, message)] = refusal(webhook("", key=f'"{MASK}"'))
    assert path == "triggers[0].key" and "shown to readers" in message


def test_trigger_labels_are_given_to_the_executions_it_starts() -> None:
    flow = load_flow(
        schedule(
            "0 11 * * *",
            "    labels:\n      - {key: source, value: nightly}\n"
            "      - {key: day, value: \"{{ trigger.date | date('%A') }}\"}\n",
        )
    )
    started = tick_event(flow, 1, "s", spec_of(flow), MONDAY_11)
    assert started is not None
    assert started.event.labels == {"source": "nightly", "day": "Monday"}
    down = declared(
        flow_trigger(
            '    labels: {after: "{{ trigger.flowId }}"}\n    conditions:\n'
            "      - {type: io.kestra.plugin.core.condition.ExecutionFlow,"
            " namespace: company.team, flowId: extract}\n"
        )
    )
    [start] = starts_for(ended("extract", State.SUCCESS, {"type": "api"}), [down], T0)
    assert start.labels == {"after": "extract"}


def test_kestra_s_logging_and_worker_keys_load_with_warnings() -> None:
    _, warnings = load_flow_with_warnings(
        schedule(
            "0 11 * * *",
            "    logLevel: DEBUG\n    workerGroup: {key: gpu}\n"
            "    allowConcurrent: false\n    failOnTriggerError: true\n",
        )
    )
    assert [w.path for w in warnings] == [
        "triggers[0].logLevel",
        "triggers[0].workerGroup",
        "triggers[0].allowConcurrent",
        "triggers[0].failOnTriggerError",
    ]
    assert "concurrency: {limit: 1" in warnings[2].message
    _, warnings = load_flow_with_warnings(schedule("0 11 * * *", "    allowConcurrent: true\n"))
    assert warnings == []


def test_the_documented_kestra_schedule_behaves_as_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    section = docs.split("\n## Schedule\n", 1)[1].split("\n## ", 1)[0]
    flow, warnings = load_flow_with_warnings(re.findall(r"```yaml\n(.*?)```", section, re.S)[1])
    assert warnings == []
    seconds, workdays = (spec_of_trigger(flow, i) for i in (0, 1))
    ticks = schedule_of(seconds).ticks(T0, T0 + timedelta(seconds=5), 9)
    assert [t.second for t in ticks] == [2, 4]
    paris_9 = {day: datetime(2024, 7, day, 7, tzinfo=UTC) for day in (12, 13, 14, 15)}
    started = {d for d, tick in paris_9.items() if tick_event(flow, 1, "w", workdays, tick)}
    assert started == {12, 15}  # Saturday 13, Sunday (and Bastille Day) 14 pass
    assert workdays.stop_after == [State.FAILED]
    assert workdays.late_maximum_delay == timedelta(hours=1)


def spec_of_trigger(flow: Flow, index: int) -> ScheduleTrigger:
    spec = flow.triggers[index].spec()
    assert isinstance(spec, ScheduleTrigger)
    return spec
