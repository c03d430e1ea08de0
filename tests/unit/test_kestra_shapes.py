"""Kestra's answer shapes and search filters (services/gateway/kestra_shapes.py,
kestra_filters.py), checked against kestrapy's own models where they are strict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kestrapy.models.label import Label
from kestrapy.models.state_history import StateHistory
from kestrapy.models.state_type import StateType
from multidict import MultiDict

from headrace.services.gateway.kestra_filters import (
    EXECUTION_FIELDS,
    FLOW_FIELDS,
    Condition,
    execution_order,
    execution_where,
    flow_matches,
    read_conditions,
)
from headrace.services.gateway.kestra_shapes import (
    iso_duration,
    kestra_execution,
    kestra_flow,
    kestra_state,
)
from headrace.services.gateway.responses import ApiError

T0 = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "PT0S"), (1.5, "PT1.5S"), (0.25, "PT0.25S"), (123, "PT2M3S"), (3600.25, "PT1H0.25S")],
)
def test_durations_read_as_javas(seconds: float, text: str) -> None:
    assert iso_duration(seconds) == text


def _execution(state: str, histories: list[dict], **more: object) -> dict:
    return {
        "id": "e1",
        "namespace": "company.team",
        "flowId": "etl",
        "flowRevision": 2,
        "labels": {"team": "data"},
        "inputs": {"n": 1},
        "outputs": {"rows": 3},
        "trigger": {"type": "api"},
        "state": {"current": state, "histories": histories},
        "createdAt": T0,
        **more,
    }


def test_an_ended_execution_has_kestras_state_labels_and_identity() -> None:
    histories = [
        {"state": "CREATED", "date": T0},
        {"state": "RUNNING", "date": T0 + timedelta(seconds=1)},
        {"state": "SUCCESS", "date": T0 + timedelta(seconds=3.5)},
    ]
    body = kestra_execution(_execution("SUCCESS", histories), NOW)
    state = body["state"]
    assert state["startDate"] == T0 and state["endDate"] == T0 + timedelta(seconds=3.5)
    assert state["duration"] == "PT3.5S"  # to its end, not to now
    assert body["labels"] == [{"key": "team", "value": "data"}]
    assert Label.from_dict(body["labels"][0]).key == "team"
    assert [StateHistory.from_dict(h).state for h in state["histories"]][-1] is StateType.SUCCESS
    assert body["originalId"] == "e1" and body["deleted"] is False
    assert body["metadata"] == {"attemptNumber": 1, "originalCreatedDate": T0}
    assert body["trigger"] is None  # a start through the API: Kestra's manual start
    assert "taskRunList" not in body  # listings leave them out


def test_a_running_execution_has_no_end_and_lasts_until_now() -> None:
    state = kestra_state(
        {"current": "RUNNING", "histories": [{"state": "CREATED", "date": T0}]}, NOW
    )
    assert state["endDate"] is None and state["duration"] == "PT5M"


def test_task_runs_name_their_execution_and_attempts_get_histories() -> None:
    run = {
        "id": "r1",
        "taskId": "load",
        "state": {"current": "FAILED", "histories": [{"state": "CREATED", "date": T0}]},
        "attempts": [
            {
                "state": {
                    "current": "FAILED",
                    "startDate": T0,
                    "endDate": T0 + timedelta(seconds=2),
                },
                "error": "boom",
            }
        ],
    }
    body = kestra_execution(_execution("FAILED", [], taskRunList=[run]), NOW)
    [shaped] = body["taskRunList"]
    assert (shaped["executionId"], shaped["namespace"], shaped["flowId"]) == (
        "e1",
        "company.team",
        "etl",
    )
    attempt = shaped["attempts"][0]
    assert [h["state"] for h in attempt["state"]["histories"]] == ["RUNNING", "FAILED"]
    assert attempt["state"]["duration"] == "PT2S" and attempt["error"] == "boom"


def test_a_replay_names_its_original_and_a_schedule_is_a_trigger() -> None:
    replay = kestra_execution(
        _execution("CREATED", [], trigger={"type": "replay", "executionId": "e0"}), NOW
    )
    assert replay["originalId"] == "e0"
    scheduled = kestra_execution(
        _execution("CREATED", [], trigger={"type": "schedule", "id": "daily", "date": "x"}), NOW
    )
    assert scheduled["trigger"] == {"id": "daily", "type": "schedule", "variables": {"date": "x"}}


def test_a_flow_has_kestras_fields_and_its_source_only_when_asked() -> None:
    flow = {"id": "etl", "namespace": "n", "revision": 3, "source": "id: etl", "createdAt": T0}
    shaped = kestra_flow({**flow, "labels": {"a": "b"}}, with_source=False)
    assert "source" not in shaped and shaped["labels"] == [{"key": "a", "value": "b"}]
    assert (shaped["disabled"], shaped["deleted"], shaped["updated"]) == (False, False, T0)
    assert kestra_flow(flow, with_source=True)["source"] == "id: etl"


# ------------------------------------------------------------------ filters


def _conditions(pairs: list[tuple[str, str]], fields: dict = EXECUTION_FIELDS) -> list[Condition]:
    return read_conditions(MultiDict(pairs), fields)


def test_both_spellings_read_the_same_filters() -> None:
    bracketed = _conditions(
        [
            ("filters[namespace][PREFIX]", "company"),
            ("filters[state][IN]", "SUCCESS,FAILED"),
            ("filters[labels][EQUALS][team]", "data"),
        ]
    )
    flat = _conditions(
        [
            ("namespace", "company"),
            ("state", "SUCCESS"),
            ("state", "FAILED"),
            ("labels", "team:data"),
        ]
    )
    assert sorted(bracketed, key=repr) == sorted(flat, key=repr)


def test_filters_become_parameterised_sql() -> None:
    where, args = execution_where(
        _conditions(
            [
                ("filters[namespace][PREFIX]", "company"),
                ("filters[state][NOT_IN]", "FAILED"),
                ("filters[labels][EQUALS][team]", "data"),
                ("filters[startDate][GREATER_THAN_OR_EQUAL_TO]", "2026-12-01T00:00:00Z"),
                ("timeRange", "PT1H"),
            ]
        ),
        NOW,
    )
    assert "starts_with(namespace, $1 || '.')" in where
    assert "NOT (state = ANY($2::text[]))" in where and "labels ->> $3 = $4" in where
    assert "start_date >= $5" in where and "created_at >= $6" in where
    assert args == [
        "company",
        ["FAILED"],
        "team",
        "data",
        datetime(2026, 12, 1, tzinfo=UTC),
        NOW - timedelta(hours=1),
    ]


@pytest.mark.parametrize(
    ("pairs", "reason"),
    [
        ([("filters[q][EQUALS]", "x")], "filter field 'q' is not supported"),
        ([("filters[state][CONTAINS]", "S")], "operation CONTAINS on 'state'"),
        ([("filters[labels][EQUALS]", "x")], "names its key"),
        ([("filters[or][0][namespace][EQUALS]", "x")], "no and/or groups"),
        ([("state", "DONE")], "unknown state 'DONE'"),
        ([("startDate", "yesterday")], "not an ISO 8601 date-time"),
        ([("labels", "nokey")], "is not key:value"),
        ([("q", "anything")], "filter 'q' is not supported here"),
        ([("timeRange", "P99999999Y")], "reaches before year 1"),
        ([("timeRange", "PT99999999999999H")], "reaches before year 1"),
    ],
)
def test_what_headrace_does_not_read_is_a_400_that_says_so(
    pairs: list[tuple[str, str]], reason: str
) -> None:
    with pytest.raises(ApiError) as refused:
        execution_where(_conditions(pairs), NOW)
    assert refused.value.status == 400 and reason in refused.value.message


def test_sorts_map_to_columns_and_unknown_keys_are_refused() -> None:
    assert execution_order(["state.startDate:desc"]).startswith("start_date DESC NULLS LAST")
    assert execution_order([]) == "created_at DESC, id"
    with pytest.raises(ApiError, match="cannot sort by 'colour'"):
        execution_order(["colour:asc"])


def test_flows_match_by_namespace_prefix_labels_and_text() -> None:
    flow = {"id": "daily-etl", "namespace": "company.team", "labels": {"team": "data"}}

    def matches(*pairs: tuple[str, str]) -> bool:
        return flow_matches(flow, _conditions(list(pairs), FLOW_FIELDS))

    assert matches(("namespace", "company")) and not matches(("namespace", "comp"))
    assert matches(("filters[namespace][STARTS_WITH]", "comp"))
    assert matches(("filters[labels][EQUALS][team]", "data"))
    assert not matches(("filters[labels][NOT_EQUALS][team]", "data"))
    assert matches(("q", "ETL")) and not matches(("q", "nightly"))
    assert matches(("filters[scope][EQUALS]", "USER")) and not matches(("scope", "SYSTEM"))
