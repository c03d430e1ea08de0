"""The scheduler's catalog of triggers, built from the `flows` topic on the embedded
broker: it follows saves, switches and deletions without reading PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from headrace import codec
from headrace.config import Settings
from headrace.flow.triggers import SCHEDULE, WEBHOOK
from headrace.flow_log import FlowLog
from headrace.flow_store import FlowStore
from headrace.messages import FlowRevision, TriggerSwitch
from headrace.services.scheduler.catalog import TriggerCatalog
from headrace.topics.definitions import FLOWS
from tests.integration.stacks import reading_flows


def flow_source(namespace: str, *, disabled: bool = False, triggers: bool = True) -> str:
    source = (
        f"id: f\nnamespace: {namespace}\ndisabled: {str(disabled).lower()}\n"
        "tasks:\n  - {id: say, type: log, message: hi}\n"
    )
    if triggers:
        source += (
            "triggers:\n"
            "  - {id: nightly, type: schedule, cron: '0 2 * * *'}\n"
            "  - {id: hook, type: webhook, key: catalog-test-key-0123456789}\n"
        )
    return source


@pytest.fixture
async def flows(settings: Settings) -> AsyncIterator[FlowStore]:
    """A gateway's flows, through a reader of its own: the catalog learns of its saves
    from the topic."""
    async with reading_flows(settings, "test-catalog-gateway") as gateway:
        yield FlowStore(gateway)


@pytest.fixture
def namespace() -> str:
    return f"test.catalog{uuid.uuid4().hex[:8]}"


def declared(catalog: TriggerCatalog, kind: str, namespace: str) -> set[str]:
    return {d.trigger.id for d in catalog.of_kind(kind) if d.flow.namespace == namespace}


async def until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def switch(producer: AIOKafkaProducer, namespace: str, disabled: bool) -> None:
    message = TriggerSwitch(namespace, "f", "nightly", disabled, datetime.now(UTC))
    await producer.send_and_wait(FLOWS.name, codec.encode(message), key=message.key.encode())


async def test_the_catalog_follows_saves_switches_and_deletions_from_the_topic(
    flows: FlowStore, flows_producer: AIOKafkaProducer, flow_log: FlowLog, namespace: str
) -> None:
    catalog = TriggerCatalog(flow_log)
    stop = asyncio.Event()
    following = asyncio.create_task(catalog.run(stop))
    try:
        await flows.save(namespace, "f", flow_source(namespace))
        await until(lambda: declared(catalog, SCHEDULE, namespace) == {"nightly"})
        assert declared(catalog, WEBHOOK, namespace) == {"hook"}
        (nightly,) = [d for d in catalog.of_kind(SCHEDULE) if d.flow.namespace == namespace]
        assert nightly.revision == 1

        await switch(flows_producer, namespace, disabled=True)
        await until(lambda: declared(catalog, SCHEDULE, namespace) == set())
        assert declared(catalog, WEBHOOK, namespace) == {"hook"}  # only the one switched
        await switch(flows_producer, namespace, disabled=False)
        await until(lambda: declared(catalog, SCHEDULE, namespace) == {"nightly"})

        await flows.save(namespace, "f", flow_source(namespace, disabled=True))
        await until(lambda: declared(catalog, WEBHOOK, namespace) == set())
        await flows.save(namespace, "f", flow_source(namespace))
        await until(lambda: declared(catalog, WEBHOOK, namespace) == {"hook"})
        await flows.delete(namespace, "f")
        await until(lambda: declared(catalog, WEBHOOK, namespace) == set())
        assert declared(catalog, SCHEDULE, namespace) == set()
    finally:
        stop.set()
        await following


async def test_catching_up_reads_a_flow_saved_a_moment_ago(
    flows: FlowStore, flow_log: FlowLog, namespace: str
) -> None:
    """What the flow triggers do when an upstream ended after their last catch-up."""
    catalog = TriggerCatalog(flow_log)
    catalog.refresh()
    await flows.save(namespace, "f", flow_source(namespace))
    assert declared(catalog, SCHEDULE, namespace) == set()  # not rebuilt: no `run`

    await catalog.catch_up()

    assert declared(catalog, SCHEDULE, namespace) == {"nightly"}


async def test_a_revision_that_no_longer_validates_is_left_out_saying_so_once(
    flows_producer: AIOKafkaProducer, flow_log: FlowLog, namespace: str, caplog
) -> None:
    """Stored before a stricter validator: its triggers cannot run; the others can."""
    broken = FlowRevision(namespace, "broken", 1, "id: broken\ntasks: 7\n", datetime.now(UTC))
    good = FlowRevision(namespace, "f", 1, flow_source(namespace), datetime.now(UTC))
    for revision in (broken, good):
        await flows_producer.send_and_wait(
            FLOWS.name, codec.encode(revision), key=revision.key.encode()
        )
    catalog = TriggerCatalog(flow_log)
    with caplog.at_level(logging.WARNING):
        await catalog.catch_up()
        await switch(flows_producer, namespace, disabled=False)  # a change: the catalog rebuilds
        await catalog.catch_up()

    assert declared(catalog, SCHEDULE, namespace) == {"nightly"}
    warned = [r for r in caplog.records if f"{namespace}/broken" in r.getMessage()]
    assert len(warned) == 1 and "no longer validates" in warned[0].getMessage()
