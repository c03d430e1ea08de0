"""Schedule ticks without I/O: cron in a time zone across DST, seconds, macros, missed-tick
policies, and the trigger events a tick becomes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.admission import Refusal, StartRefused
from headrace.expressions import ExpressionError
from headrace.flow.cron import CronError, CronSchedule, MissedPolicy, plan_due
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.schedule_ticks import tick_event, tick_execution_id
from headrace.flow.triggers import ScheduleTrigger

PARIS = "Europe/Paris"
# 2024 in Europe/Paris: clocks go 02:00 CET -> 03:00 CEST on 31 March (01:00Z) and
# 03:00 CEST -> 02:00 CET on 27 October (01:00Z).
SPRING_EVE = datetime(2024, 3, 30, 23, tzinfo=UTC)  # local midnight (CET)
AUTUMN_EVE = datetime(2024, 10, 26, 22, tzinfo=UTC)  # local midnight (CEST)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def local_day(schedule: CronSchedule, eve: datetime) -> list[str]:
    """The ticks of one local day (from local midnight) as local ISO text."""
    ticks = schedule.ticks(eve - timedelta(microseconds=1), eve + timedelta(hours=23), 1000)
    return [schedule.local_iso(t) for t in ticks if t < eve + timedelta(hours=24)]


# --- DST -------------------------------------------------------------------------------


def test_daily_two_am_on_spring_forward_day_fires_once_when_clocks_change() -> None:
    schedule = CronSchedule("0 2 * * *", PARIS)
    ticks = schedule.ticks(SPRING_EVE, SPRING_EVE + timedelta(days=2), 10)
    assert ticks == [utc(2024, 3, 31, 1), utc(2024, 4, 1, 0)]
    assert schedule.local_iso(ticks[0]) == "2024-03-31T03:00:00+02:00"
    assert schedule.local_iso(ticks[1]) == "2024-04-01T02:00:00+02:00"


def test_daily_two_am_on_fall_back_day_fires_once_at_first_occurrence() -> None:
    schedule = CronSchedule("0 2 * * *", PARIS)
    ticks = schedule.ticks(AUTUMN_EVE, AUTUMN_EVE + timedelta(days=2), 10)
    assert ticks == [utc(2024, 10, 27, 0), utc(2024, 10, 28, 1)]
    assert schedule.local_iso(ticks[0]) == "2024-10-27T02:00:00+02:00"
    assert schedule.local_iso(ticks[1]) == "2024-10-28T02:00:00+01:00"


def test_half_past_hourly_on_spring_forward_day() -> None:
    day = local_day(CronSchedule("30 * * * *", PARIS), SPRING_EVE)
    # 23 real hours; the wall-clock 02:30 does not exist and fires when clocks change.
    assert day[:5] == [
        "2024-03-31T00:30:00+01:00",
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T03:30:00+02:00",
        "2024-03-31T04:30:00+02:00",
    ]
    assert len(day) == 24 and len(set(day)) == 24


def test_half_past_hourly_on_fall_back_day_runs_every_real_hour() -> None:
    schedule = CronSchedule("30 * * * *", PARIS)
    ticks = schedule.ticks(AUTUMN_EVE, AUTUMN_EVE + timedelta(hours=25), 100)
    around = [
        schedule.local_iso(t) for t in ticks if utc(2024, 10, 26, 23) < t < utc(2024, 10, 27, 3)
    ]
    assert around == [
        "2024-10-27T01:30:00+02:00",
        "2024-10-27T02:30:00+02:00",  # 00:30Z
        "2024-10-27T02:30:00+01:00",  # 01:30Z: any-hour crons fire in both passes
        "2024-10-27T03:30:00+01:00",
    ]
    assert len(ticks) == len(set(ticks)) == 25  # 25 real hours, 25 ticks


def test_every_five_minutes_keeps_its_rhythm_through_the_repeated_hour() -> None:
    schedule = CronSchedule("*/5 * * * *", PARIS)
    ticks = schedule.ticks(utc(2024, 10, 26, 23), utc(2024, 10, 27, 3), 1000)
    assert all(b - a == timedelta(minutes=5) for a, b in pairwise(ticks))
    assert len(ticks) == 4 * 12  # four real hours, no pause and no double tick
    assert schedule.next_after(utc(2024, 10, 27, 0, 57)) == utc(2024, 10, 27, 1, 0)


def test_a_named_hour_fires_once_on_fall_back_night() -> None:
    schedule = CronSchedule("30 2 * * *", PARIS)
    ticks = schedule.ticks(AUTUMN_EVE, AUTUMN_EVE + timedelta(hours=25), 10)
    assert ticks == [utc(2024, 10, 27, 0, 30)]  # the first 02:30 only


def test_walls_landing_on_one_instant_are_one_tick() -> None:
    schedule = CronSchedule("0 2,3 * * *", PARIS)
    ticks = schedule.ticks(SPRING_EVE, SPRING_EVE + timedelta(hours=23), 10)
    assert ticks == [utc(2024, 3, 31, 1)]


def test_next_and_previous_inside_the_repeated_hour() -> None:
    schedule = CronSchedule("30 * * * *", PARIS)
    second_pass = utc(2024, 10, 27, 1, 15)  # 02:15 CET, after the first 02:30 already fired
    assert schedule.previous_before(second_pass) == utc(2024, 10, 27, 0, 30)
    assert schedule.next_after(second_pass) == utc(2024, 10, 27, 1, 30)  # the second 02:30
    assert schedule.previous_before(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 27, 0, 30)
    assert schedule.next_after(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 27, 1, 30)
    assert schedule.previous_before(utc(2024, 10, 27, 2, 0)) == utc(2024, 10, 27, 1, 30)
    named = CronSchedule("30 2 * * *", PARIS)
    assert named.next_after(utc(2024, 10, 27, 0, 45)) == utc(2024, 10, 28, 1, 30)


def test_previous_before_the_spring_gap_tick() -> None:
    schedule = CronSchedule("0 2 * * *", PARIS)
    assert schedule.previous_before(utc(2024, 3, 31, 1)) == utc(2024, 3, 30, 1)
    assert schedule.previous_before(utc(2024, 3, 31, 1, 0, 1)) == utc(2024, 3, 31, 1)


@settings(max_examples=200, deadline=None)
@given(
    start=st.one_of(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1)),
        # Days around 2024's changes in Europe, North America and Lord Howe (DST edges).
        st.datetimes(min_value=datetime(2024, 10, 20), max_value=datetime(2024, 11, 4)),
        st.datetimes(min_value=datetime(2024, 3, 2), max_value=datetime(2024, 4, 8)),
    ),
    cron=st.sampled_from(
        ["30 * * * *", "0 2 * * *", "*/20 * * * *", "0 0 * * 0", "15 1-3 * * *", "@hourly"]
    ),
    zone=st.sampled_from([PARIS, "America/New_York", "Australia/Lord_Howe", "UTC"]),
)
def test_ticks_are_strictly_increasing_and_consistent(
    start: datetime, cron: str, zone: str
) -> None:
    schedule = CronSchedule(cron, zone)
    after = start.replace(tzinfo=UTC)
    ticks = schedule.ticks(after, after + timedelta(days=8), 400)
    assert ticks and all(t > after for t in ticks)
    assert all(a < b for a, b in pairwise(ticks))
    for earlier, later in pairwise(ticks):
        assert schedule.next_after(earlier) == later
        assert schedule.previous_before(later) == earlier


# --- seconds and macros ------------------------------------------------------------------


def test_sixth_field_is_seconds() -> None:
    schedule = CronSchedule("* * * * * */15")
    assert schedule.ticks(utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 1), 10) == [
        utc(2024, 1, 1, 0, 0, 15),
        utc(2024, 1, 1, 0, 0, 30),
        utc(2024, 1, 1, 0, 0, 45),
        utc(2024, 1, 1, 0, 1, 0),
    ]


def test_every_second() -> None:
    schedule = CronSchedule("* * * * * *")
    after = utc(2024, 1, 1, 12, 0, 0) + timedelta(milliseconds=300)
    assert schedule.next_after(after) == utc(2024, 1, 1, 12, 0, 1)
    assert schedule.previous_before(after) == utc(2024, 1, 1, 12, 0, 0)


@pytest.mark.parametrize(
    ("macro", "expected"),
    [
        ("@daily", "2024-03-01T00:00:00+01:00"),
        ("@midnight", "2024-03-01T00:00:00+01:00"),
        ("@hourly", "2024-02-29T13:00:00+01:00"),
        ("@weekly", "2024-03-03T00:00:00+01:00"),  # Sunday
        ("@monthly", "2024-03-01T00:00:00+01:00"),
        ("@yearly", "2025-01-01T00:00:00+01:00"),
        ("@annually", "2025-01-01T00:00:00+01:00"),
    ],
)
def test_macros_in_a_time_zone(macro: str, expected: str) -> None:
    schedule = CronSchedule(macro, PARIS)
    assert schedule.local_iso(schedule.next_after(utc(2024, 2, 29, 11, 30))) == expected


def test_invalid_cron_and_zone_are_refused() -> None:
    with pytest.raises(CronError):
        CronSchedule("61 * * * *")
    with pytest.raises(CronError):
        CronSchedule("* * * * *", "Mars/Olympus")


def test_a_cron_naming_no_date_is_refused_at_load_and_never_crashes_a_pass() -> None:
    with pytest.raises(CronError, match="never fires"):
        CronSchedule("0 0 30 2 *").next_after(utc(2024, 1, 1))
    source = FLOW_SOURCE.replace('cron: "0 2 * * *"', 'cron: "0 0 30 2 *"')
    with pytest.raises(FlowValidationError, match=r"triggers\[0\]\.cron.*never fires"):
        load_flow(source, "nightly.yaml")


# --- missed ticks -------------------------------------------------------------------------

MINUTELY = CronSchedule("* * * * *")
LATE = timedelta(seconds=10)
T0 = utc(2024, 5, 1, 12, 0)


def plan(policy: MissedPolicy, last_tick: datetime, now: datetime, limit: int = 1000):
    return plan_due(MINUTELY, policy, last_tick, now, late_after=LATE, limit=limit)


@pytest.mark.parametrize("policy", list(MissedPolicy))
def test_on_time_tick_fires_under_every_policy(policy: MissedPolicy) -> None:
    due = plan(policy, T0, T0 + timedelta(minutes=1, milliseconds=5))
    assert due.fire == [T0 + timedelta(minutes=1)]
    assert due.advance_to == T0 + timedelta(minutes=1)
    assert due.skipped_missed == 0


@pytest.mark.parametrize("policy", list(MissedPolicy))
def test_nothing_due(policy: MissedPolicy) -> None:
    due = plan(policy, T0, T0 + timedelta(seconds=59))
    assert due.fire == [] and due.advance_to is None


def test_all_fires_every_missed_tick_oldest_first() -> None:
    due = plan(MissedPolicy.ALL, T0, T0 + timedelta(minutes=5, seconds=1))
    assert due.fire == [T0 + timedelta(minutes=m) for m in range(1, 6)]
    assert due.advance_to == T0 + timedelta(minutes=5)
    assert not due.truncated


def test_all_is_paced_by_the_limit() -> None:
    due = plan(MissedPolicy.ALL, T0, T0 + timedelta(hours=2), limit=100)
    assert len(due.fire) == 100 and due.truncated
    assert due.advance_to == T0 + timedelta(minutes=100)
    rest = plan(MissedPolicy.ALL, due.advance_to, T0 + timedelta(hours=2), limit=100)
    assert rest.fire[0] == T0 + timedelta(minutes=101) and not rest.truncated
    assert rest.advance_to == T0 + timedelta(hours=2)


def test_last_fires_only_the_latest_missed_tick_and_on_time_ones() -> None:
    now = T0 + timedelta(minutes=5, seconds=3)  # the 12:05 tick is on time (3 s late)
    due = plan(MissedPolicy.LAST, T0, now)
    assert due.fire == [T0 + timedelta(minutes=4), T0 + timedelta(minutes=5)]
    assert due.skipped_missed == 3
    assert due.advance_to == T0 + timedelta(minutes=5)


def test_none_fires_no_missed_tick_but_advances_past_them() -> None:
    due = plan(MissedPolicy.NONE, T0, T0 + timedelta(minutes=5, seconds=30))
    assert due.fire == []
    assert due.skipped_missed == 5
    assert due.advance_to == T0 + timedelta(minutes=5)


def test_last_after_years_of_per_second_ticks_is_quick() -> None:
    schedule = CronSchedule("* * * * * *")
    now = utc(2024, 5, 1)
    due = plan_due(schedule, MissedPolicy.LAST, utc(2022, 5, 1), now, late_after=LATE, limit=1000)
    assert due.fire[0] == now - LATE
    assert due.fire[-1] == now
    assert len(due.fire) == 11  # the latest missed one, and 10 s of on-time ticks
    assert due.advance_to == now


# --- tick events --------------------------------------------------------------------------

FLOW_SOURCE = """
id: nightly
namespace: tests.schedules
inputs:
  - id: day
    type: STRING
  - id: count
    type: INT
    defaults: 1
tasks:
  - id: hello
    type: log
    message: "{{ trigger.date }}"
triggers:
  - id: every-night
    type: schedule
    cron: "0 2 * * *"
    timezone: Europe/Paris
    inputs:
      day: "{{ trigger.date | date('%Y-%m-%d') }}"
"""
FLOW = load_flow(FLOW_SOURCE, "nightly.yaml")
SPEC = FLOW.triggers[0].spec()


def test_tick_event_is_deterministic_and_renders_inputs() -> None:
    assert isinstance(SPEC, ScheduleTrigger)
    tick = utc(2024, 3, 31, 1)
    first = tick_event(FLOW, 3, "every-night", SPEC, tick).event
    again = tick_event(FLOW, 4, "every-night", SPEC, tick).event
    assert (
        first.execution_id
        == again.execution_id
        == tick_execution_id("tests.schedules", "nightly", "every-night", tick)
    )
    assert first.event_id == again.event_id != first.execution_id
    assert first.inputs == {"day": "2024-03-31", "count": 1}
    assert first.trigger == {
        "type": "schedule",
        "id": "every-night",
        "date": "2024-03-31T03:00:00+02:00",
        "next": "2024-04-01T02:00:00+02:00",
        "previous": "2024-03-30T02:00:00+01:00",
    }
    assert first.flow_revision == 3 and first.time == tick
    other = tick_event(FLOW, 3, "every-night", SPEC, utc(2024, 4, 1, 0)).event
    assert other.execution_id != first.execution_id


def test_tick_identity_is_the_utc_instant() -> None:
    paris = datetime(2024, 3, 31, 3, tzinfo=CronSchedule("* * * * *", PARIS).zone)
    assert tick_execution_id("n", "f", "t", paris) == tick_execution_id(
        "n", "f", "t", utc(2024, 3, 31, 1)
    )


def test_backfill_events_say_so_with_the_same_id() -> None:
    tick = utc(2024, 3, 31, 1)
    event = tick_event(FLOW, 3, "every-night", SPEC, tick, backfill=True).event
    assert event.trigger["backfill"] is True
    assert event.execution_id == tick_event(FLOW, 3, "every-night", SPEC, tick).event.execution_id


def test_invalid_inputs_raise() -> None:
    bad = ScheduleTrigger(cron="0 2 * * *", inputs={"count": "{{ 'x' }}", "day": "d"})
    with pytest.raises(StartRefused) as refused:
        tick_event(FLOW, 1, "every-night", bad, utc(2024, 3, 31, 1))
    assert refused.value.refusal is Refusal.INVALID_INPUTS
    assert [name for name, _ in refused.value.input_errors] == ["count"]
    undefined = ScheduleTrigger(cron="0 2 * * *", inputs={"day": "{{ trigger.nope }}"})
    with pytest.raises(ExpressionError):
        tick_event(FLOW, 1, "every-night", undefined, utc(2024, 3, 31, 1))


def test_the_documented_schedule_example_renders_its_tick() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    section = docs.split("## Schedule", 1)[1].split("\n## ", 1)[0]
    flow = load_flow(re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)[0], "docs.yaml")
    (trigger,) = flow.triggers
    spec = trigger.spec()
    assert isinstance(spec, ScheduleTrigger) and spec.timezone == PARIS
    # 02:00 does not exist on 31 March 2024 in Paris: the tick is 03:00 CEST.
    event = tick_event(flow, 1, trigger.id, spec, utc(2024, 3, 31, 1)).event
    assert event.inputs == {"day": "2024-03-31"}
    assert event.trigger["date"] == "2024-03-31T03:00:00+02:00"
