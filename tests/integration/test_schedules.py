"""Schedule triggers on the real broker and PostgreSQL.

First the schedule runner in this process with an injected clock (two runners racing,
catch-up, the runtime switch, bad inputs), then the whole stack: a per-second schedule
runs through every service while a second scheduler joins and the first restarts, and
no tick gives two executions; backfills are idempotent through the API and the CLI.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import TopicPartition

from headrace import codec
from headrace.api_client import ApiClient
from headrace.config import Settings
from headrace.db.migrate import migrate, migrate_url
from headrace.db.pool import create_pool
from headrace.db.triggers import TriggerStateRepository
from headrace.flow.loader import load_flow
from headrace.kafka import make_consumer, make_producer
from headrace.local import LocalStack
from headrace.messages import TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.services.scheduler.schedules import ScheduleRunner
from headrace.topics.definitions import TRIGGERS
from tests.integration.stacks import run_cli, running_stack_on_own_broker
from tests.integration.waiting import wait_until

NAMESPACE = "tests.schedules"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Catalog:
    declared: list[DeclaredTrigger] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[DeclaredTrigger]:
        return [d for d in self.declared if d.trigger.kind == kind]


def declared(source: str) -> DeclaredTrigger:
    flow = load_flow(source, "test.yaml")
    return DeclaredTrigger(flow, 1, flow.triggers[0])


async def published(settings: Settings, flow_id: str) -> list[TriggerEvent]:
    """Every trigger event of `flow_id` on the topic so far (read up to the end offsets)."""
    consumer = make_consumer(settings, group_id=None, client_id="test-schedules")
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        numbers = sorted(consumer.partitions_for_topic(TRIGGERS.name) or [])
        partitions = [TopicPartition(TRIGGERS.name, n) for n in numbers]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        events: list[TriggerEvent] = []
        deadline = time.monotonic() + 30
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            assert time.monotonic() < deadline, "could not read the triggers topic in time"
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = codec.decode(record.value)
                    if isinstance(event, TriggerEvent) and event.flow_id == flow_id:
                        events.append(event)
        return events
    finally:
        await consumer.stop()


@pytest.fixture
async def runner_parts(settings: Settings) -> Any:
    await migrate_url(settings.database_url)
    pool = await create_pool(settings.database_url)
    await migrate(pool)
    producer = make_producer(settings, "test-schedules")
    await producer.start()
    try:
        yield pool, producer
    finally:
        await producer.stop()
        await pool.close()


def every_ten_seconds(flow_id: str, policy: str = "ALL", extra: str = "") -> str:
    return f"""
id: {flow_id}
namespace: {NAMESPACE}
inputs:
  - id: at
    type: STRING
{extra}
tasks:
  - id: hello
    type: log
    message: "{{{{ inputs.at }}}}"
triggers:
  - id: tick
    type: schedule
    cron: "*/10 * * * * *"  # seconds first, as Kestra writes them
    withSeconds: true
    recoverMissedSchedules: {policy}
    inputs:
      at: "{{{{ trigger.date }}}}"
"""


async def test_two_runners_fire_each_tick_once_and_honour_the_switch(
    settings: Settings, runner_parts: Any
) -> None:
    pool, producer = runner_parts
    flow_id = f"race-{uuid.uuid4().hex[:8]}"
    catalog = Catalog([declared(every_ten_seconds(flow_id))])
    states = TriggerStateRepository(pool)
    first = ScheduleRunner(catalog, states, producer)
    second = ScheduleRunner(catalog, states, producer)
    key = (NAMESPACE, flow_id, "tick")

    # First seen at T0: nothing before it fires, whatever the policy.
    await first.run_once(T0)
    state = await states.get(key)
    assert state is not None and state.last_tick == T0

    # 35 s later (two of the ticks are "missed": ALL fires them too), both race.
    await asyncio.gather(
        first.run_once(T0 + timedelta(seconds=35)), second.run_once(T0 + timedelta(seconds=35))
    )
    events = await published(settings, flow_id)
    dates = [e.trigger["date"] for e in events]
    assert sorted(dates) == [
        "2024-01-01T00:00:10+00:00",
        "2024-01-01T00:00:20+00:00",
        "2024-01-01T00:00:30+00:00",
    ]
    assert [e.inputs["at"] for e in sorted(events, key=lambda e: e.time)] == sorted(dates)
    state = await states.get(key)
    assert state is not None
    assert state.last_tick == T0 + timedelta(seconds=30)
    assert state.next_tick == T0 + timedelta(seconds=40)
    assert state.last_execution_id == max(events, key=lambda e: e.time).execution_id

    # Switched off: nothing fires; switched on again: the off period is not caught up.
    await states.set_disabled(key, True, T0 + timedelta(seconds=36))
    await first.run_once(T0 + timedelta(seconds=61))
    assert len(await published(settings, flow_id)) == 3
    await states.set_disabled(key, False, T0 + timedelta(seconds=65))
    await second.run_once(T0 + timedelta(seconds=71))
    events = await published(settings, flow_id)
    assert sorted(e.trigger["date"] for e in events)[3:] == ["2024-01-01T00:01:10+00:00"]


async def test_a_changed_or_returning_schedule_starts_from_when_it_is_seen_again(
    settings: Settings, runner_parts: Any
) -> None:
    pool, producer = runner_parts
    states = TriggerStateRepository(pool)
    flow_id = f"edited-{uuid.uuid4().hex[:8]}"
    key = (NAMESPACE, flow_id, "tick")
    await ScheduleRunner(
        Catalog([declared(every_ten_seconds(flow_id))]), states, producer
    ).run_once(T0)
    # The cron is edited while 30 ticks of the old one are "missed": none of them fire.
    edited = every_ten_seconds(flow_id).replace("*/10", "*/20")
    runner = ScheduleRunner(Catalog([declared(edited)]), states, producer)
    await runner.run_once(T0 + timedelta(minutes=5))
    state = await states.get(key)
    assert state is not None and state.last_tick == T0 + timedelta(minutes=5)
    assert state.schedule == "* * * * * */20 | UTC"
    assert await published(settings, flow_id) == []

    # The flow goes away (deleted or disabled in YAML) long enough for any scheduler to
    # notice, then comes back ten minutes later: the time it was gone is not caught up.
    await pool.execute(
        "UPDATE trigger_state SET updated_at = now() - interval '1 minute'"
        " WHERE namespace = $1 AND flow_id = $2",
        NAMESPACE,
        flow_id,
    )
    await ScheduleRunner(Catalog([]), states, producer).run_once(T0 + timedelta(minutes=6))
    state = await states.get(key)
    assert state is not None and state.last_tick is None
    await runner.run_once(T0 + timedelta(minutes=15))
    await runner.run_once(T0 + timedelta(minutes=15, seconds=21))
    assert [e.trigger["date"] for e in await published(settings, flow_id)] == [
        "2024-01-01T00:15:20+00:00"
    ]


async def test_missed_ticks_follow_the_policy(settings: Settings, runner_parts: Any) -> None:
    pool, producer = runner_parts
    states = TriggerStateRepository(pool)
    fired: dict[str, list[str]] = {}
    for policy in ("LAST", "NONE"):
        flow_id = f"missed-{policy.lower()}-{uuid.uuid4().hex[:8]}"
        runner = ScheduleRunner(
            Catalog([declared(every_ten_seconds(flow_id, policy))]), states, producer
        )
        await runner.run_once(T0)
        # Down for ten minutes; the pass sees 60 missed ticks and one on time (12:10:00).
        await runner.run_once(T0 + timedelta(minutes=10, seconds=2))
        events = await published(settings, flow_id)
        fired[policy] = sorted(e.trigger["date"] for e in events)
        state = await states.get((NAMESPACE, flow_id, "tick"))
        assert state is not None and state.last_tick == T0 + timedelta(minutes=10)
    assert fired["LAST"] == ["2024-01-01T00:09:50+00:00", "2024-01-01T00:10:00+00:00"]
    assert fired["NONE"] == ["2024-01-01T00:10:00+00:00"]


async def test_invalid_inputs_skip_the_tick_and_record_the_error(
    settings: Settings, runner_parts: Any
) -> None:
    pool, producer = runner_parts
    states = TriggerStateRepository(pool)
    flow_id = f"bad-inputs-{uuid.uuid4().hex[:8]}"
    source = every_ten_seconds(flow_id).replace(
        'at: "{{ trigger.date }}"', 'at: "{{ trigger.date }}"\n      nope: 1'
    )
    runner = ScheduleRunner(Catalog([declared(source)]), states, producer)
    await runner.run_once(T0)
    await runner.run_once(T0 + timedelta(seconds=11))
    assert await published(settings, flow_id) == []
    state = await states.get((NAMESPACE, flow_id, "tick"))
    assert state is not None
    assert state.last_tick == T0 + timedelta(seconds=10)  # skipped, not retried forever
    assert state.last_error is not None and "nope" in state.last_error


# --- the whole stack --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # This module runs two schedulers, and a second one joining while the first
    # restarts has wedged the flow-trigger group on the embedded broker.
    with running_stack_on_own_broker(settings, tmp_path_factory, "schedule-logs") as stack:
        yield stack


def executions(api: ApiClient, flow_id: str) -> list[dict]:
    found: list[dict] = []
    page = 1
    while True:
        answer = api.request(
            "GET",
            "/executions",
            params={"namespace": NAMESPACE, "flowId": flow_id, "page": page, "size": 1000},
        )
        found += answer["results"]
        if len(found) >= answer["total"] or not answer["results"]:
            return found
        page += 1


def successes(api: ApiClient, flow_id: str) -> list[dict]:
    return [e for e in executions(api, flow_id) if e["state"]["current"] == "SUCCESS"]


def per_second_flow(flow_id: str) -> str:
    return f"""
id: {flow_id}
namespace: {NAMESPACE}
inputs:
  - id: at
    type: STRING
tasks:
  - id: hello
    type: log
    message: "tick {{{{ trigger.date }}}} input {{{{ inputs.at }}}}"
triggers:
  - id: every-second
    type: schedule
    cron: "* * * * * *"
    withSeconds: true
    inputs:
      at: "{{{{ trigger.date }}}}"
"""


def test_per_second_schedule_through_the_stack_never_fires_a_tick_twice(
    stack: LocalStack,
) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    flow_id = f"every-second-{uuid.uuid4().hex[:8]}"
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=per_second_flow(flow_id).encode(),
        content_type="application/x-yaml",
    )
    started = time.monotonic()
    first = wait_until(lambda: successes(api, flow_id), timeout_s=30)
    # Within a couple of seconds of the catalog reading the flow from the topic.
    assert time.monotonic() - started < 10
    assert first[0]["trigger"]["type"] == "schedule"
    assert first[0]["inputs"]["at"] == first[0]["trigger"]["date"]

    # A second scheduler joins, then the first one restarts.
    original = next(p for p in stack.processes if p.name == "scheduler")
    stack.start_service("scheduler")
    stack.wait_ready()
    count = len(executions(api, flow_id))
    wait_until(lambda: len(executions(api, flow_id)) >= count + 3)
    stack.restart(original)
    stack.wait_ready()
    count = len(executions(api, flow_id))
    wait_until(lambda: len(executions(api, flow_id)) >= count + 3)
    api.request(
        "PUT", f"/triggers/{NAMESPACE}/{flow_id}/every-second", json_body={"disabled": True}
    )

    def complete() -> list[dict] | None:
        # Every second from the first tick to the last has its execution: none missed.
        found = executions(api, flow_id)
        dates = sorted(datetime.fromisoformat(e["trigger"]["date"]) for e in found)
        span = int((dates[-1] - dates[0]).total_seconds()) + 1
        return found if len(set(dates)) == span else None

    found = wait_until(complete)
    per_tick = Counter(e["trigger"]["date"] for e in found)
    assert per_tick.most_common(1)[0][1] == 1, per_tick.most_common(3)
    wait_until(lambda: all(e["state"]["current"] == "SUCCESS" for e in executions(api, flow_id)))
    # Ids derive from ticks, so a tick fired twice shows as one row; what would show is
    # its execution running twice: each logged its line exactly once.
    for execution in executions(api, flow_id):
        lines = [line["message"] for line in api.request("GET", f"/logs/{execution['id']}")]
        assert sum(line.startswith("tick ") for line in lines) == 1, (execution["id"], lines)

    listed = api.request("GET", "/triggers", params={"namespace": NAMESPACE, "flowId": flow_id})
    (item,) = listed["results"]
    assert item["type"] == "schedule" and item["disabled"] and item["runtimeDisabled"]
    assert item["lastTick"] is not None and item["lastExecutionId"] is not None


def test_backfill_is_idempotent_through_api_and_cli(stack: LocalStack) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    flow_id = f"backfill-{uuid.uuid4().hex[:8]}"
    source = per_second_flow(flow_id).replace(
        'cron: "* * * * * *"\n    withSeconds: true', 'cron: "0 2 * * *"'
    )
    source = source.replace("type: schedule", "type: schedule\n    timezone: Europe/Paris")
    api.request(
        "PUT",
        f"/flows/{NAMESPACE}/{flow_id}",
        body=source.encode(),
        content_type="application/x-yaml",
    )
    # Across the spring-forward night: 02:00 on 31 March is 03:00 CEST.
    body = {"start": "2024-03-29T00:00:00+01:00", "end": "2024-04-01T02:00:00+02:00"}
    path = f"/triggers/{NAMESPACE}/{flow_id}/every-second/backfill"
    answer = api.request("POST", path, json_body=body)
    assert answer["count"] == 3 and len(set(answer["executionIds"])) == 3
    done = wait_until(lambda: len(s := successes(api, flow_id)) == 3 and s)
    assert sorted(e["trigger"]["date"] for e in done) == [
        "2024-03-29T02:00:00+01:00",
        "2024-03-30T02:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
    ]
    assert all(e["trigger"].get("backfill") for e in done)
    assert {e["id"] for e in done} == set(answer["executionIds"])

    range_options = ["--start", body["start"], "--end", body["end"]]
    cli = run_cli(
        stack, "trigger", "backfill", NAMESPACE, flow_id, "every-second", *range_options,
        timeout_s=60,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert set(cli.stdout.split()[:3]) == set(answer["executionIds"])
    # Once an execution started after the re-run has ended, a new one would show by now.
    marker = api.request("POST", f"/executions/{NAMESPACE}/{flow_id}", json_body={"at": "x"})
    terminal = {"SUCCESS", "FAILED", "WARNING", "KILLED", "CANCELLED"}
    wait_until(
        lambda: any(
            e["id"] == marker["id"] and e["state"]["current"] in terminal
            for e in executions(api, flow_id)
        )
    )
    assert len(executions(api, flow_id)) == 4

    too_many = {"start": "1990-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    with pytest.raises(Exception, match="smaller ranges"):
        api.request("POST", path, json_body=too_many)
    into_the_future = {"start": "2026-01-01T00:00:00Z", "end": "2099-01-01T00:00:00Z"}
    with pytest.raises(Exception, match="past ticks only"):
        api.request("POST", path, json_body=into_the_future)
    assert len(executions(api, flow_id)) == 4  # neither refusal started anything

    listing = run_cli(stack, "trigger", "list", "--namespace", NAMESPACE, timeout_s=60)
    assert listing.returncode == 0, listing.stderr
    assert f"{NAMESPACE}/{flow_id}/every-second  schedule  enabled" in listing.stdout
