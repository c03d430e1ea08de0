"""Kestra's Schedule properties on the real broker and PostgreSQL: `conditions` (a tick
whose conditions are false starts nothing, and the schedule moves on) in the schedule
runner, and `stopAfter` through the whole stack (a failed run switches the schedule off,
visibly and persistently, until it is switched on again)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.db.triggers import TriggerStateRepository
from headrace.local import LocalStack
from headrace.services.scheduler.schedules import ScheduleRunner
from tests.integration.stacks import running_stack
from tests.integration.test_schedules import (  # noqa: F401 (runner_parts: a fixture)
    T0,
    Catalog,
    declared,
    published,
    runner_parts,
)
from tests.integration.waiting import wait_until

NAMESPACE = "tests.schedule-kestra"


def weekend_ticks(flow_id: str) -> str:
    # Every 12 hours (seconds first, Kestra's way), on weekends only.
    return f"""
id: {flow_id}
namespace: {NAMESPACE}
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ trigger.date }}}}"
triggers:
  - id: tick
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 0 */12 * * *"
    withSeconds: true
    conditions:
      - type: io.kestra.plugin.core.condition.Weekend
"""


async def test_ticks_whose_conditions_are_false_start_nothing(
    settings: Settings,
    runner_parts: Any,  # noqa: F811
) -> None:
    pool, producer = runner_parts
    flow_id = f"weekend-{uuid.uuid4().hex[:8]}"
    states = TriggerStateRepository(pool)
    runner = ScheduleRunner(Catalog([declared(weekend_ticks(flow_id))]), states, producer)
    await runner.run_once(T0)  # Monday 2024-01-01: first seen
    # Through Sunday: 12 ticks, of which the four on Saturday and Sunday start.
    await runner.run_once(T0 + timedelta(days=6, hours=12))
    dates = sorted(e.trigger["date"] for e in await published(settings, flow_id))
    assert dates == [
        "2024-01-06T00:00:00+00:00",
        "2024-01-06T12:00:00+00:00",
        "2024-01-07T00:00:00+00:00",
        "2024-01-07T12:00:00+00:00",
    ]
    # The weekday ticks were passed over, not left to retry: the watermark is past them.
    state = await states.get((NAMESPACE, flow_id, "tick"))
    assert state is not None and state.last_tick == T0 + timedelta(days=6, hours=12)
    assert state.last_error is None


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "schedule-kestra-logs") as stack:
        yield stack


def failing_every_second(flow_id: str) -> str:
    return f"""
id: {flow_id}
namespace: {NAMESPACE}
tasks:
  - id: boom
    type: io.kestra.plugin.core.execution.Fail
    errorMessage: on purpose
triggers:
  - id: every-second
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "* * * * * *"
    withSeconds: true
    stopAfter:
      - FAILED
"""


def listed(api: ApiClient, flow_id: str) -> dict[str, Any]:
    answer = api.request("GET", "/triggers", params={"namespace": NAMESPACE, "flowId": flow_id})
    (item,) = answer["results"]
    return item


def failed_ids(api: ApiClient, flow_id: str) -> set[str]:
    answer = api.request(
        "GET", "/executions", params={"namespace": NAMESPACE, "flowId": flow_id, "size": 1000}
    )
    return {e["id"] for e in answer["results"] if e["state"]["current"] == "FAILED"}


async def test_a_stop_is_answered_again_for_its_execution_so_a_failed_publish_is_redone(
    runner_parts: Any,  # noqa: F811
) -> None:
    pool, _ = runner_parts
    states = TriggerStateRepository(pool)
    key = (NAMESPACE, f"stops-{uuid.uuid4().hex[:8]}", "nightly")
    first = await states.stop_after(key, "FAILED", "ex-1")
    assert first is not None and first.disabled
    again = await states.stop_after(key, "FAILED", "ex-1")  # the publish failed: retried
    assert again is not None and again.disabled
    assert await states.stop_after(key, "FAILED", "ex-2") is None  # off already


def test_stop_after_switches_the_schedule_off_until_switched_on(stack: LocalStack) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    flow_id = f"stop-after-{uuid.uuid4().hex[:8]}"
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=failing_every_second(flow_id).encode(),
        content_type="application/x-yaml",
    )
    item = wait_until(lambda: (i := listed(api, flow_id))["stoppedAfter"] and i, timeout_s=90)
    assert item["disabled"] and item["runtimeDisabled"] and not item["disabledInFlow"]
    assert item["stopAfter"] == ["FAILED"] and item["withSeconds"] is True
    assert item["nextTick"] is None
    stopped = item["stoppedAfter"]
    assert stopped["state"] == "FAILED"
    assert stopped["executionId"] in wait_until(lambda: failed_ids(api, flow_id))

    # Switched on again: the reason is cleared, and the next failure stops it again.
    api.request(
        "PUT", f"/triggers/{NAMESPACE}/{flow_id}/every-second", json_body={"disabled": False}
    )
    again = listed(api, flow_id)
    assert again["stoppedAfter"] is None and not again["disabled"]
    item = wait_until(
        lambda: (
            (i := listed(api, flow_id))["stoppedAfter"]
            and i["stoppedAfter"]["executionId"] != stopped["executionId"]
            and i
        ),
        timeout_s=90,
    )
    assert item["stoppedAfter"]["state"] == "FAILED" and item["runtimeDisabled"]


def test_a_webhook_with_a_short_key_starts_its_flow_with_the_triggers_labels(
    stack: LocalStack,
) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    flow_id = f"short-key-{uuid.uuid4().hex[:8]}"
    source = f"""
id: {flow_id}
namespace: {NAMESPACE}
tasks:
  - id: hello
    type: io.kestra.plugin.core.log.Log
    message: "{{{{ trigger.body.who }}}}"
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: abc
    labels:
      - key: caller
        value: "{{{{ trigger.body.who }}}}"
    conditions:
      - type: io.kestra.plugin.core.condition.Expression
        expression: "{{{{ trigger.body.who == 'ada' }}}}"
"""
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )
    url = f"/executions/webhook/{NAMESPACE}/{flow_id}/abc"
    skipped = api.request("POST", url, json_body={"who": "eve"})
    assert skipped == {"executed": False, "reason": "conditions not met"}
    started = api.request("POST", url, json_body={"who": "ada"})
    assert wait_until(lambda: ended_state(api, started["id"])) == "SUCCESS"
    assert api.request("GET", f"/executions/{started['id']}")["labels"] == {"caller": "ada"}


def ended_state(api: ApiClient, execution_id: str) -> str | None:
    """The execution's end state; None while it runs or is not indexed yet."""
    try:
        state = api.request("GET", f"/executions/{execution_id}")["state"]["current"]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return state if state in ("SUCCESS", "WARNING", "FAILED", "KILLED") else None
