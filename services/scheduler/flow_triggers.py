"""Flow triggers: when an execution ends, start the flows that declared they follow it.

Reads the `executions` topic (group `headrace-flow-triggers`), keeps the terminal
execution snapshots, matches each against every declared `flow` trigger (namespace,
flow id or any flow of the namespace, end states, labels) and publishes the downstream
Starts. Offsets are committed only after those Starts were acknowledged; a replay after a
crash re-publishes Starts with the same derived ids, which the executor ignores.

Loops (a flow triggering itself, or A -> B -> A) are cut by a chain carried in the
trigger data: each downstream execution's `trigger.chain` lists the flows that led to
it, and no Start is published once that chain would exceed `CHAIN_LIMIT`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError

from headrace import codec
from headrace.config import Settings
from headrace.errors import CodecError
from headrace.flow.triggers import FLOW, FlowTrigger, UpstreamFlow
from headrace.kafka import make_consumer
from headrace.messages import ExecutionEvent, ExecutionSnapshot, TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger, TriggerCatalog
from headrace.services.scheduler.offsets import (
    NEW_GROUP_OFFSET_RESET,
    AssignmentTracker,
    pin_new_partitions,
)
from headrace.services.scheduler.starts import publish_starts, try_build_start
from headrace.topics.definitions import EXECUTIONS

log = logging.getLogger(__name__)

GROUP_ID = "headrace-flow-triggers"
# Longest chain of flow-triggered executions: a real pipeline is a handful of flows deep,
# a loop (A triggers A, or A -> B -> A) would run forever. 10 leaves room for the first.
CHAIN_LIMIT = 10
# Execution ends remembered to drop a re-delivered end quickly (ids make it harmless
# anyway): a few hundred kilobytes of ids.
SEEN_LIMIT = 10_000
POLL_TIMEOUT_MS = 200


def upstream_matches(upstream: UpstreamFlow, snapshot: ExecutionSnapshot) -> bool:
    return (
        snapshot.namespace == upstream.namespace
        and upstream.flow_id in (None, snapshot.flow_id)
        and snapshot.state in upstream.states
        and all(snapshot.labels.get(k) == v for k, v in upstream.labels.items())
    )


def trigger_matches(declared: DeclaredTrigger, snapshot: ExecutionSnapshot) -> bool:
    spec = declared.trigger.spec()
    assert isinstance(spec, FlowTrigger)
    return any(upstream_matches(up, snapshot) for up in spec.preconditions.flows)


def chain_after(snapshot: ExecutionSnapshot) -> list[str]:
    """The flows that led to a downstream of `snapshot`'s execution, this one last."""
    upstream = snapshot.trigger
    earlier = upstream.get("chain") if upstream.get("type") == FLOW else None
    chain = [str(link) for link in earlier] if isinstance(earlier, list) else []
    return [*chain, f"{snapshot.namespace}/{snapshot.flow_id}"]


def trigger_data(
    execution_id: str, snapshot: ExecutionSnapshot, chain: list[str]
) -> dict[str, Any]:
    """The downstream execution's `trigger` (Kestra's names: `trigger.executionId`...)."""
    return {
        "type": FLOW,
        "executionId": execution_id,
        "namespace": snapshot.namespace,
        "flowId": snapshot.flow_id,
        "flowRevision": snapshot.flow_revision,
        "state": str(snapshot.state),
        "outputs": snapshot.outputs,
        "labels": snapshot.labels,
        "chain": chain,
    }


def starts_for(
    event: ExecutionEvent, declared: Iterable[DeclaredTrigger], now: datetime
) -> list[TriggerEvent]:
    """The Starts one execution event causes (none unless it is an execution's end)."""
    snapshot = event.execution
    if snapshot is None or not snapshot.state.is_terminal:
        return []
    matching = [d for d in declared if trigger_matches(d, snapshot)]
    if not matching:
        return []
    chain = chain_after(snapshot)
    if len(chain) > CHAIN_LIMIT:
        log.warning(
            "flow trigger loop cut: execution %s of %s/%s ends a chain of %d flow-triggered "
            "executions (%s); not starting %s",
            event.execution_id,
            snapshot.namespace,
            snapshot.flow_id,
            len(chain),
            " -> ".join(chain),
            ", ".join(f"{d.flow.namespace}/{d.flow.id} ({d.trigger.id})" for d in matching),
        )
        return []
    data = trigger_data(event.execution_id, snapshot, chain)
    # An execution restarted after its end ends again: count its ends to tell them apart.
    cause = ("flow", event.execution_id, len(snapshot.histories))
    starts = [try_build_start(d, data, cause, now) for d in matching]
    return [start for start in starts if start is not None]


class FlowTriggers:
    """The scheduler component: `start()` joins the group, `run()` serves until stopped."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, catalog: TriggerCatalog):
        self._settings = settings
        self._producer = producer
        self._catalog = catalog
        self._tracker = AssignmentTracker()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._catalog_as_of = datetime.min.replace(tzinfo=UTC)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Join the group and fix the start position: ends after this are not missed."""
        consumer = make_consumer(
            self._settings,
            group_id=GROUP_ID,
            client_id=f"headrace-flow-triggers-{socket.gethostname()}",
            auto_offset_reset=NEW_GROUP_OFFSET_RESET,
        )
        consumer.subscribe([EXECUTIONS.name], listener=self._tracker)
        await consumer.start()  # returns once the group gave it its partitions
        self._consumer = consumer
        await pin_new_partitions(consumer, self._tracker)

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        while not stop.is_set():
            await pin_new_partitions(consumer, self._tracker)
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            events = [e for records in fetched.values() for e in self._decode(records)]
            if not events:
                continue
            await self._catch_up_catalog(events)
            declared = self._catalog.of_kind(FLOW)
            now = datetime.now(UTC)
            starts = [s for event in events for s in starts_for(event, declared, now)]
            if starts:
                await publish_starts(self._producer, starts)
                log.info("flow triggers started %d executions", len(starts))
            try:
                await consumer.commit()
            except CommitFailedError as exc:
                # A rebalance took the partitions: their new owner replays, harmlessly.
                log.warning("offset commit failed after a rebalance: %s", exc)

    def _decode(self, records: Iterable[Any]) -> list[ExecutionEvent]:
        """Terminal execution snapshots not seen yet; the rest is not ours to read."""
        events = []
        for record in records:
            try:
                message = codec.decode(record.value)
            except CodecError as exc:
                log.error(
                    "skipping undecodable message %s[%d]@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
                continue
            if not isinstance(message, ExecutionEvent) or message.execution is None:
                continue
            if not message.execution.state.is_terminal:
                continue
            key = (message.execution_id, len(message.execution.histories))
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            events.append(message)
        return events

    async def _catch_up_catalog(self, events: list[ExecutionEvent]) -> None:
        """Re-read the triggers when an execution ended after our last read of them.

        The catalog's own poll lags by up to its interval; without this, a flow saved
        just before its upstream ended would miss that end.
        """
        if max(event.time for event in events) <= self._catalog_as_of:
            return
        as_of = datetime.now(UTC)
        try:
            await self._catalog.refresh()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot re-read the flow triggers, matching the last read: %s", exc)
            return
        self._catalog_as_of = as_of
