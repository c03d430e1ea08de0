"""Flow triggers with several upstreams, without a broker or a database: windows, counting
ends, firing ids, the downstream's `trigger`, and what the YAML accepts or refuses."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.triggers import FlowTrigger, Preconditions, TimeWindow
from headrace.messages import ExecutionEvent, ExecutionSnapshot, StateChange
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.flow_triggers import (
    chain_after,
    firing_start,
    starts_for,
    trigger_data,
    upstream_end,
    window_change,
    windowed_matches,
)
from headrace.services.scheduler.flow_windows import (
    SLIDING_START,
    UpstreamEnd,
    WindowBounds,
    count_end,
    firing_cause,
    window_bounds,
)
from headrace.services.scheduler.starts import trigger_execution_id
from headrace.states import State

DAY = datetime(2024, 5, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


# ------------------------------------------------------------ windows


def test_the_default_window_is_the_utc_day() -> None:
    assert window_bounds(TimeWindow(), at(13.5)) == WindowBounds(DAY, at(24))
    assert window_bounds(TimeWindow(), at(24)) == WindowBounds(at(24), at(48))


def test_window_advance_shifts_consecutive_windows() -> None:
    six = TimeWindow(window=timedelta(hours=6), window_advance=timedelta(hours=3))
    assert window_bounds(six, at(3)) == WindowBounds(at(3), at(9))
    assert window_bounds(six, at(8.99)) == WindowBounds(at(3), at(9))
    assert window_bounds(six, at(2.5)) == WindowBounds(at(-3), at(3))
    daily_from_six = TimeWindow(window_advance=timedelta(hours=6))
    assert window_bounds(daily_from_six, at(5)) == WindowBounds(at(-18), at(6))


def test_short_windows_are_aligned_on_the_clock() -> None:
    ten = TimeWindow(window=timedelta(minutes=10))
    assert window_bounds(ten, at(1) + timedelta(minutes=17)) == WindowBounds(
        at(1) + timedelta(minutes=10), at(1) + timedelta(minutes=20)
    )


def test_a_sliding_window_has_one_open_record() -> None:
    sliding = TimeWindow(type="SLIDING_WINDOW", window=timedelta(hours=1))
    assert window_bounds(sliding, at(5)) == window_bounds(sliding, at(500))
    assert window_bounds(sliding, at(5)) == WindowBounds(SLIDING_START, None)


# ------------------------------------------------------------ counting ends

A = "shop/a [SUCCESS] {}"
B = "shop/b [SUCCESS] {}"


def both(**extra: object) -> Preconditions:
    return Preconditions.model_validate(
        {"flows": [{"namespace": "shop", "flowId": "a"}, {"namespace": "shop", "flowId": "b"}]}
        | extra
    )


def end(flow_id: str, hours: float, execution_id: str | None = None) -> UpstreamEnd:
    return UpstreamEnd(
        execution_id=execution_id or f"{flow_id}{hours:g}",
        end=2,
        namespace="shop",
        flow_id=flow_id,
        flow_revision=1,
        state="SUCCESS",
        ended_at=at(hours),
        outputs={"n": hours},
        labels={},
        chain=(f"shop/{flow_id}",),
    )


def test_the_condition_keys_name_each_distinct_condition_once() -> None:
    pre = Preconditions.model_validate(
        {
            "flows": [
                {"namespace": "shop", "flowId": "b"},
                {"namespace": "shop", "flowId": "a"},
                {"namespace": "shop", "flowId": "b", "states": ["SUCCESS"]},
            ]
        }
    )
    assert list(pre.conditions()) == [B, A]


def test_one_end_is_not_enough_both_fire_once_then_progress_resets() -> None:
    pre = both()
    first = count_end({}, pre, [A], end("a", 1))
    assert first.fired is None and list(first.satisfied) == [A]
    second = count_end(first.satisfied, pre, [B], end("b", 2))
    # In listed order, whichever ended last.
    assert second.fired == (end("a", 1), end("b", 2))
    assert second.satisfied == {}  # resetOnSuccess (Kestra's default)
    third = count_end(second.satisfied, pre, [B], end("b", 3))
    assert third.fired is None and list(third.satisfied) == [B]


def test_without_reset_each_further_end_fires_with_the_newest_of_each() -> None:
    pre = both(resetOnSuccess=False)
    step = count_end({}, pre, [A], end("a", 1))
    step = count_end(step.satisfied, pre, [B], end("b", 2))
    assert step.fired == (end("a", 1), end("b", 2))
    step = count_end(step.satisfied, pre, [A], end("a", 3))
    assert step.fired == (end("a", 3), end("b", 2))


def test_an_older_end_read_late_changes_nothing() -> None:
    pre = both(resetOnSuccess=False)
    step = count_end({}, pre, [A], end("a", 5))
    late = count_end(step.satisfied, pre, [A], end("a", 1))
    assert late.fired is None and late.satisfied == {A: end("a", 5)}


def test_one_end_meeting_every_condition_fires_alone() -> None:
    pre = Preconditions.model_validate(
        {"flows": [{"namespace": "shop"}, {"namespace": "shop", "flowId": "a"}]}
    )
    keys = list(pre.conditions())
    step = count_end({}, pre, keys, end("a", 1))
    assert step.fired == (end("a", 1), end("a", 1))


def test_a_sliding_window_forgets_ends_older_than_the_window_before_the_newest() -> None:
    pre = both(timeWindow={"type": "SLIDING_WINDOW", "window": "PT2H"})
    step = count_end({}, pre, [A], end("a", 0))
    step = count_end(step.satisfied, pre, [B], end("b", 3))
    assert step.fired is None and list(step.satisfied) == [B]  # a ended 3 h before
    step = count_end(step.satisfied, pre, [A], end("a", 4.5))
    assert step.fired == (end("a", 4.5), end("b", 3))


def test_progress_on_a_condition_the_flow_dropped_counts_for_nothing() -> None:
    pre = Preconditions.model_validate(
        {"flows": [{"namespace": "shop", "flowId": "b"}, {"namespace": "shop", "flowId": "c"}]}
    )
    step = count_end({A: end("a", 1)}, pre, [B], end("b", 2))
    assert step.fired is None and list(step.satisfied) == [B]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("ab"), max_size=30), st.booleans())
def test_in_order_ends_fire_exactly_when_a_round_completes(flows: list[str], reset: bool) -> None:
    pre = both(resetOnSuccess=reset)
    satisfied: dict[str, UpstreamEnd] = {}
    met: set[str] = set()  # the reference: which flows ended since the last start
    used: set[str] = set()
    for hour, flow_id in enumerate(flows):
        new = end(flow_id, hour)
        step = count_end(satisfied, pre, [A if flow_id == "a" else B], new)
        met.add(flow_id)
        if met == {"a", "b"}:
            assert step.fired is not None and new in step.fired
            # Each start has the newest end of each flow, and with reset none is reused.
            assert {u.flow_id for u in step.fired} == {"a", "b"}
            if reset:
                assert not used & {u.key for u in step.fired}
                used |= {u.key for u in step.fired}
                met = set()
        else:
            assert step.fired is None
        satisfied = step.satisfied


def test_a_firing_is_named_by_its_window_and_its_set_of_ends() -> None:
    pair = [end("a", 1), end("b", 2)]
    assert firing_cause(DAY, pair) == firing_cause(DAY, list(reversed(pair)))
    assert firing_cause(DAY, pair) != firing_cause(at(24), pair)
    assert firing_cause(DAY, pair) != firing_cause(DAY, [end("a", 1), end("b", 3)])


# ------------------------------------------------------------ through the trigger

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

DOWNSTREAM = """
id: report
namespace: shop
inputs:
  - id: first
    type: STRING
tasks:
  - id: hello
    type: log
    message: hi
triggers:
  - id: after-both
    type: flow
    inputs:
      first: "{{ trigger.upstreams[0].executionId }}"
    preconditions:
      id: both
      flows:
        - namespace: shop
          flowId: a
        - namespace: shop
          flowId: b
"""


def declared(source: str = DOWNSTREAM) -> DeclaredTrigger:
    flow = load_flow(source, "test")
    return DeclaredTrigger(flow, 1, flow.triggers[0])


def ended(flow_id: str, execution_id: str, hours: float, trigger: dict | None = None):
    snapshot = ExecutionSnapshot(
        namespace="shop",
        flow_id=flow_id,
        flow_revision=2,
        state=State.SUCCESS,
        histories=[
            StateChange(State.CREATED, at(hours - 1)),
            StateChange(State.SUCCESS, at(hours)),
        ],
        inputs={},
        outputs={"rows": len(execution_id)},
        trigger=trigger or {"type": "api"},
    )
    return ExecutionEvent(execution_id, 5, at(hours) + timedelta(seconds=1), execution=snapshot)


def test_a_trigger_with_several_conditions_is_counted_not_fired_per_end() -> None:
    trigger = declared()
    event = ended("a", "exec-a", 1)
    assert starts_for(event, [trigger], NOW) == []
    [match] = windowed_matches(event, [trigger])
    assert match.met == (A,) and match.end.ended_at == at(1)  # the end, not the event's time
    assert windowed_matches(ended("other", "x", 1), [trigger]) == []


def test_counting_both_ends_starts_one_execution_and_a_replay_names_it_again() -> None:
    trigger = declared()
    [first] = windowed_matches(ended("a", "exec-a", 1), [trigger])
    [second] = windowed_matches(ended("b", "exec-bb", 2), [trigger])
    window = window_bounds(first.spec.preconditions.time_window, first.end.ended_at).start
    after_a = window_change(first, window, {})
    assert after_a.firing is None
    after_b = window_change(second, window, after_a.satisfied)
    assert after_b.firing is not None and after_b.satisfied == {}
    start = firing_start(second, after_b.firing, NOW)
    assert start is not None and start.execution_id == after_b.firing.execution_id
    assert start.inputs == {"first": "exec-a"}
    assert start.trigger["executionId"] == "exec-bb"  # the last upstream, as before
    assert start.trigger["outputs"] == {"rows": 7}
    assert [u["executionId"] for u in start.trigger["upstreams"]] == ["exec-a", "exec-bb"]
    assert [u["outputs"] for u in start.trigger["upstreams"]] == [{"rows": 6}, {"rows": 7}]
    # A replay finds the stored firing (JSON as PostgreSQL gives it back): same Start.
    again = firing_start(second, after_b.firing, NOW + timedelta(hours=1))
    assert again is not None and again.execution_id == start.execution_id
    assert again.trigger == start.trigger


def test_a_single_condition_keeps_firing_per_end_as_before() -> None:
    single = DOWNSTREAM.replace("        - namespace: shop\n          flowId: b\n", "").replace(
        'first: "{{ trigger.upstreams[0].executionId }}"', 'first: "{{ trigger.executionId }}"'
    )
    trigger = declared(single)
    event = ended("a", "exec-a", 1)
    assert windowed_matches(event, [trigger]) == []
    [start] = starts_for(event, [trigger], NOW)
    assert start.inputs == {"first": "exec-a"}
    assert start.trigger["outputs"] == {"rows": 6} and "upstreams" not in start.trigger
    # The id is derived as before this change: an end replayed across the upgrade is
    # still the same execution.
    assert start.execution_id == trigger_execution_id(trigger, ("flow", "exec-a", 2))


def test_the_chain_continues_from_any_upstream_trigger_type() -> None:
    child = ended("a", "x", 1, trigger={"type": "subflow", "chain": ["shop/parent"]})
    assert chain_after(child.execution) == ["shop/parent", "shop/a"]
    assert chain_after(ended("a", "x", 1).execution) == ["shop/a"]


def test_where_several_upstreams_meet_the_longest_chain_carries_on() -> None:
    short = upstream_end(ended("a", "x", 1))
    long = upstream_end(ended("b", "y", 2, trigger={"type": "flow", "chain": ["shop/z"]}))
    assert trigger_data(short, [short, long])["chain"] == ["shop/z", "shop/b"]
    assert trigger_data(long, [short, long])["chain"] == ["shop/z", "shop/b"]


# ------------------------------------------------------------ what the YAML accepts

KESTRA_SHAPED = """\
id: report
namespace: shop
tasks:
  - {id: hello, type: log, message: hi}
triggers:
  - id: after-both
    type: io.kestra.plugin.core.trigger.Flow
    preconditions:
      id: both_ready
      timeWindow:
        type: DURATION_WINDOW
        window: PT6H
        windowAdvance: PT3H
      resetOnSuccess: false
      flows:
        - {namespace: shop, flowId: a, states: [SUCCESS, WARNING]}
        - {namespace: shop, flowId: b}
"""


def load_errors(source: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(FlowValidationError) as raised:
        load_flow(source, "flow.yaml")
    return [(e.path, e.line, e.message) for e in raised.value.errors]


def test_kestra_preconditions_with_an_id_and_a_time_window_load() -> None:
    spec = load_flow(KESTRA_SHAPED, "flow.yaml").triggers[0].spec()
    assert isinstance(spec, FlowTrigger)
    pre = spec.preconditions
    assert pre.id == "both_ready" and pre.reset_on_success is False
    assert pre.time_window.window == timedelta(hours=6)
    assert pre.time_window.window_advance == timedelta(hours=3)
    sliding = KESTRA_SHAPED.replace("DURATION_WINDOW", "SLIDING_WINDOW").replace(
        "        windowAdvance: PT3H\n", ""
    )
    assert load_flow(sliding, "flow.yaml").triggers[0].spec().preconditions.time_window.type == (
        "SLIDING_WINDOW"
    )
    default = load_flow(DOWNSTREAM, "flow.yaml").triggers[0].spec().preconditions
    assert default.reset_on_success is True
    assert default.time_window == TimeWindow(type="DURATION_WINDOW", window=timedelta(days=1))


@pytest.mark.parametrize("kind", ["DAILY_TIME_DEADLINE", "DAILY_TIME_WINDOW"])
def test_daily_windows_are_refused_at_their_type_line(kind: str) -> None:
    [(path, line, message)] = load_errors(KESTRA_SHAPED.replace("DURATION_WINDOW", kind))
    assert (path, line) == ("triggers[0].preconditions.timeWindow.type", 11)
    assert "not supported yet" in message and kind in message


def test_daily_window_keys_and_where_filters_are_refused_as_not_supported() -> None:
    source = KESTRA_SHAPED.replace("windowAdvance: PT3H", 'deadline: "09:00:00"').replace(
        "resetOnSuccess: false", "where: [{id: x, filters: []}]"
    )
    errors = load_errors(source)
    assert [(path, line) for path, line, _ in errors] == [
        ("triggers[0].preconditions.timeWindow.deadline", 13),
        ("triggers[0].preconditions.where", 14),
    ]
    assert all("not supported yet" in message for _, _, message in errors)


def test_window_advance_on_a_sliding_window_and_an_empty_window_are_refused() -> None:
    errors = load_errors(
        KESTRA_SHAPED.replace("DURATION_WINDOW", "SLIDING_WINDOW").replace("PT6H", "PT0S")
    )
    assert [(path, line) for path, line, _ in errors] == [
        ("triggers[0].preconditions.timeWindow.window", 12),
        ("triggers[0].preconditions.timeWindow.windowAdvance", 13),
    ]


def test_the_documented_flow_trigger_examples_load() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "triggers.md").read_text()
    section = docs.split("\n## Flow\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        spec = load_flow(block, "docs.yaml").triggers[0].spec()
        assert isinstance(spec, FlowTrigger)
