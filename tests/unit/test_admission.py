"""`admit`: the one decision every path that starts an execution takes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from headrace import codec
from headrace.admission import Refusal, StartRefused, admit
from headrace.flow.loader import load_flow
from headrace.topics.definitions import MAX_VALUE_BYTES

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SOURCE = """
id: report
namespace: team.data
inputs:
  - id: day
    type: STRING
  - id: count
    type: INT
    defaults: 3
  - id: note
    type: STRING
    required: false
tasks:
  - id: say
    type: log
    message: "{{ inputs.day }}"
"""
FLOW = load_flow(SOURCE, "report.yaml")


def start(**overrides):
    arguments = {
        "execution_id": "ex1",
        "inputs": {"day": "2026-12-06"},
        "trigger": {"type": "api"},
        "time": NOW,
        "labels": {"team": "data"},
    }
    return admit(FLOW, 4, **{**arguments, **overrides})


def test_an_admitted_start_has_typed_defaulted_inputs_and_a_derived_event_id() -> None:
    admitted = start()
    event = admitted.event
    assert (event.namespace, event.flow_id, event.flow_revision) == ("team.data", "report", 4)
    assert event.inputs == {"day": "2026-12-06", "count": 3, "note": None}
    assert (event.execution_id, event.labels, event.trigger) == (
        "ex1",
        {"team": "data"},
        {"type": "api"},
    )
    assert codec.decode(admitted.value) == event
    # Publishing the same start twice sends the same event; another execution, another id.
    assert start().event.event_id == event.event_id != start(execution_id="ex2").event.event_id


def test_a_disabled_flow_does_not_start() -> None:
    disabled = load_flow(SOURCE + "disabled: true\n", "report.yaml")
    with pytest.raises(StartRefused, match=r"flow team\.data/report is disabled") as refused:
        admit(disabled, 1, execution_id="ex1", inputs={"day": "2026-12-06"}, trigger={}, time=NOW)
    assert refused.value.refusal is Refusal.DISABLED


def test_inputs_that_do_not_fit_are_refused_naming_each_input() -> None:
    with pytest.raises(StartRefused) as refused:
        start(inputs={"count": "many", "extra": 1})
    assert refused.value.refusal is Refusal.INVALID_INPUTS
    assert sorted(name for name, _ in refused.value.input_errors) == ["count", "day", "extra"]
    assert "day: required input has no value" in str(refused.value)


def test_a_start_the_triggers_topic_would_not_take_is_refused_with_its_size() -> None:
    with pytest.raises(StartRefused, match=f"over the {MAX_VALUE_BYTES}") as refused:
        start(inputs={"day": "2026-12-06", "note": "x" * MAX_VALUE_BYTES})
    assert refused.value.refusal is Refusal.TOO_LARGE


def test_a_start_the_wire_format_cannot_carry_is_refused() -> None:
    with pytest.raises(StartRefused, match="cannot be encoded") as refused:
        start(trigger={"type": "api", "n": 2**64})
    assert refused.value.refusal is Refusal.NOT_ENCODABLE
