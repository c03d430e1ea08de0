"""Flow triggers: when an execution ends, start the flows that declared they follow it.

Reads the `executions` topic (group `headrace-flow-triggers`), keeps the terminal
execution snapshots, matches each against every declared `flow` trigger (namespace,
flow id or any flow of the namespace, end states, labels) and publishes the downstream
Starts. Offsets are committed only after those Starts were acknowledged; a replay after a
crash re-publishes Starts with the same derived ids, which the executor ignores.

A trigger with one upstream condition fires on each matching end, from the event alone.
One with several fires once all of them were met within its time window: each matching
end is counted in PostgreSQL (`headrace.db.flow_windows`, decided by the pure
`flow_windows`) before the Starts are published, so a replayed end finds itself counted
and re-publishes the execution it completed, under the same id.

Loops (a flow triggering itself, or A -> B -> A) are cut by a chain carried in the
trigger data: each downstream execution's `trigger.chain` lists the flows that led to
it, and no Start is published once that chain would exceed `CHAIN_LIMIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError

from headrace.config import Settings
from headrace.consume import consume, decode
from headrace.core.retries import was_retried
from headrace.db.flow_windows import Firing, FlowWindowRepository, WindowChange
from headrace.flow.execution_conditions import EndedExecution
from headrace.flow.triggers import (
    FLOW,
    TRIGGER_TYPES,
    FlowTrigger,
    Preconditions,
    UpstreamFlow,
)
from headrace.kafka import make_consumer
from headrace.messages import ExecutionEvent, ExecutionSnapshot, TriggerEvent
from headrace.services.scheduler.catalog import DeclaredTrigger, TriggerCatalog
from headrace.services.scheduler.flow_windows import (
    UpstreamEnd,
    count_end,
    firing_cause,
    window_bounds,
)
from headrace.services.scheduler.offsets import (
    NEW_GROUP_OFFSET_RESET,
    AssignmentTracker,
    pin_new_partitions,
)
from headrace.services.scheduler.starts import (
    publish_starts,
    trigger_execution_id,
    try_build_start,
)
from headrace.services.scheduler.stop_after import TriggerStops, stops_for
from headrace.topics.definitions import EXECUTIONS

log = logging.getLogger(__name__)

# A catch-up that takes longer (a reader stalled without failing) is given up: the ends
# are matched against the last read rather than held for good.
CATCH_UP_TIMEOUT_S = 30.0

GROUP_ID = "headrace-flow-triggers"
# Longest chain of flow-triggered executions: a real pipeline is a handful of flows deep,
# a loop (A triggers A, or A -> B -> A) would run forever. 10 leaves room for the first.
CHAIN_LIMIT = 10
# Execution ends remembered to drop a re-delivered end quickly (ids make it harmless
# anyway): a few hundred kilobytes of ids.
SEEN_LIMIT = 10_000
# A join takes about half the group's rebalance timeout on the embedded broker (4 s
# there) and up to the whole of it on real Kafka (60 s) when old members must rejoin;
# past these, the join is abandoned and retried.
JOIN_TIMEOUT_S = {True: 20.0, False: 150.0}  # by settings.low_latency
JOIN_ATTEMPTS = 3
# Window progress and counted ends are kept this long: past the `executions` topic's
# retention (7 days), so no end can be re-delivered after its record was dropped.
STATE_RETENTION = timedelta(days=8)
STATE_CLEANUP_INTERVAL = timedelta(hours=1)
# Waits between tries while PostgreSQL is unreachable (nothing is committed meanwhile).
DB_RETRY_FIRST_S = 0.5
DB_RETRY_MAX_S = 30.0


def upstream_matches(upstream: UpstreamFlow, snapshot: ExecutionSnapshot) -> bool:
    return (
        snapshot.namespace == upstream.namespace
        and upstream.flow_id in (None, snapshot.flow_id)
        and snapshot.state in upstream.states
        and all(snapshot.labels.get(k) == v for k, v in upstream.labels.items())
    )


def flow_spec(declared: DeclaredTrigger) -> FlowTrigger:
    spec = declared.trigger.spec()
    assert isinstance(spec, FlowTrigger)
    return spec


# The one condition of a trigger without `preconditions`: its `states` and `conditions`.
FILTERS_ONLY = "conditions"


def met_conditions(spec: FlowTrigger, snapshot: ExecutionSnapshot) -> list[str]:
    """The keys of the trigger's conditions this end meets (one end may meet several).

    The trigger's own `states` and `conditions` (Kestra's) must hold first; without
    `preconditions` they are its one condition.
    """
    end = EndedExecution(snapshot.namespace, snapshot.flow_id, snapshot.state, snapshot.labels)
    if not spec.passes(end):
        return []
    if spec.preconditions is None:
        return [FILTERS_ONLY]
    conditions = spec.preconditions.conditions()
    return [key for key, upstream in conditions.items() if upstream_matches(upstream, snapshot)]


def is_windowed(spec: FlowTrigger) -> bool:
    """Several conditions: the trigger waits for all, with state; one: fires per end."""
    return spec.preconditions is not None and len(spec.preconditions.conditions()) > 1


def split_by_conditions(
    declared: Iterable[DeclaredTrigger],
) -> tuple[list[DeclaredTrigger], list[DeclaredTrigger]]:
    """Single-condition triggers (for `starts_for`), then the others (`windowed_matches`)."""
    single: list[DeclaredTrigger] = []
    several: list[DeclaredTrigger] = []
    for d in declared:
        (several if is_windowed(flow_spec(d)) else single).append(d)
    return single, several


def chain_after(snapshot: ExecutionSnapshot) -> list[str]:
    """The flows that led to a downstream of `snapshot`'s execution, this one last.

    Read from the upstream's `trigger.chain` whatever started it: an execution started
    by something else that carries a chain (a subflow child, say) continues it.
    """
    earlier = snapshot.trigger.get("chain")
    chain = [str(link) for link in earlier] if isinstance(earlier, list) else []
    return [*chain, f"{snapshot.namespace}/{snapshot.flow_id}"]


def upstream_end(event: ExecutionEvent) -> UpstreamEnd:
    snapshot = event.execution
    assert snapshot is not None
    return UpstreamEnd(
        execution_id=event.execution_id,
        # An execution restarted after its end ends again: count its ends to tell them apart.
        end=len(snapshot.histories),
        namespace=snapshot.namespace,
        flow_id=snapshot.flow_id,
        flow_revision=snapshot.flow_revision,
        state=str(snapshot.state),
        ended_at=snapshot.histories[-1].date if snapshot.histories else event.time,
        outputs=snapshot.outputs,
        labels=snapshot.labels,
        chain=tuple(chain_after(snapshot)),
    )


def trigger_data(last: UpstreamEnd, upstreams: Sequence[UpstreamEnd] = ()) -> dict[str, Any]:
    """The downstream execution's `trigger` (Kestra's names: `trigger.executionId`...):
    the last upstream's end, and with several upstreams `upstreams`, one per condition
    in listed order (left out for one: it would only repeat the rest, outputs and all,
    in a message whose size counts)."""
    # Where several upstreams meet, the longest chain is the one that may loop (the
    # last upstream's on a tie: max keeps the first).
    chain = max([last.chain, *(u.chain for u in upstreams)], key=len)
    data: dict[str, Any] = {
        "type": FLOW,
        "executionId": last.execution_id,
        "namespace": last.namespace,
        "flowId": last.flow_id,
        "flowRevision": last.flow_revision,
        "state": last.state,
        "outputs": last.outputs,
        "labels": last.labels,
        "chain": list(chain),
    }
    if upstreams:
        data["upstreams"] = [
            {
                "executionId": u.execution_id,
                "namespace": u.namespace,
                "flowId": u.flow_id,
                "flowRevision": u.flow_revision,
                "state": u.state,
                "outputs": u.outputs,
                "labels": u.labels,
            }
            for u in upstreams
        ]
    return data


def loop_cut(end: UpstreamEnd, matching: Sequence[DeclaredTrigger]) -> bool:
    """True (and a warning) when `end` would start `matching` beyond `CHAIN_LIMIT`."""
    if len(end.chain) <= CHAIN_LIMIT:
        return False
    log.warning(
        "flow trigger loop cut: execution %s of %s/%s ends a chain of %d flow-triggered "
        "executions (%s); not starting %s",
        end.execution_id,
        end.namespace,
        end.flow_id,
        len(end.chain),
        " -> ".join(end.chain),
        ", ".join(f"{d.flow.namespace}/{d.flow.id} ({d.trigger.id})" for d in matching),
    )
    return True


def starts_for(
    event: ExecutionEvent, declared: Iterable[DeclaredTrigger], now: datetime
) -> list[TriggerEvent]:
    """The Starts one execution event causes through single-condition triggers (none
    unless it is an execution's end); `windowed_matches` covers the others."""
    snapshot = event.execution
    if snapshot is None or not snapshot.state.is_terminal:
        return []
    matching = []
    for d in declared:
        spec = flow_spec(d)
        if not is_windowed(spec) and met_conditions(spec, snapshot):
            matching.append(d)
    if not matching:
        return []
    end = upstream_end(event)
    if loop_cut(end, matching):
        return []
    data = trigger_data(end)
    cause = ("flow", end.execution_id, end.end)
    starts = [try_build_start(d, data, cause, now) for d in matching]
    return [start for start in starts if start is not None]


@dataclass(frozen=True, slots=True)
class WindowedMatch:
    """An end that meets conditions of a trigger waiting for several upstreams."""

    declared: DeclaredTrigger
    spec: FlowTrigger
    met: tuple[str, ...]  # condition keys
    end: UpstreamEnd

    @property
    def preconditions(self) -> Preconditions:
        """A windowed trigger's (only triggers with several upstreams are windowed)."""
        assert self.spec.preconditions is not None
        return self.spec.preconditions


def windowed_matches(
    event: ExecutionEvent, declared: Iterable[DeclaredTrigger]
) -> list[WindowedMatch]:
    """The multi-condition triggers one execution event counts for (none unless an end)."""
    snapshot = event.execution
    if snapshot is None or not snapshot.state.is_terminal:
        return []
    found: list[tuple[DeclaredTrigger, FlowTrigger, list[str]]] = []
    for d in declared:
        spec = flow_spec(d)
        if is_windowed(spec) and (met := met_conditions(spec, snapshot)):
            found.append((d, spec, met))
    if not found:
        return []
    end = upstream_end(event)
    # Cut before counting: a firing's chain is the longest of its upstreams', so no
    # firing from counted ends can exceed the limit.
    if loop_cut(end, [d for d, _, _ in found]):
        return []
    return [WindowedMatch(d, spec, tuple(met), end) for d, spec, met in found]


def window_change(
    match: WindowedMatch, window_start: datetime, stored: dict[str, Any]
) -> WindowChange:
    """What counting `match.end` does to a window whose stored progress is `stored`."""
    satisfied = {key: UpstreamEnd.from_json(held) for key, held in stored.items()}
    step = count_end(satisfied, match.preconditions, match.met, match.end)
    firing = None
    if step.fired is not None:
        cause = firing_cause(window_start, step.fired)
        firing = Firing(
            trigger_execution_id(match.declared, cause),
            window_start,
            [upstream.to_json() for upstream in step.fired],
        )
    return WindowChange({key: held.to_json() for key, held in step.satisfied.items()}, firing)


def firing_start(match: WindowedMatch, firing: Firing, now: datetime) -> TriggerEvent | None:
    """The Start of a firing, built alike when it happens and when a replay finds it."""
    fired = [UpstreamEnd.from_json(upstream) for upstream in firing.upstreams]
    last = next((u for u in fired if u.key == match.end.key), match.end)
    data = trigger_data(last, fired)
    return try_build_start(match.declared, data, firing_cause(firing.window_start, fired), now)


async def count_match(
    windows: FlowWindowRepository, match: WindowedMatch, now: datetime
) -> TriggerEvent | None:
    """Count one end in its window (in PostgreSQL); the Start it fired, now or when it
    was first counted (a replay after a crash re-publishes the same execution)."""
    bounds = window_bounds(match.preconditions.time_window, match.end.ended_at)
    counted = await windows.count_end(
        match.declared.key,
        bounds.start,
        bounds.end,
        match.end.key,
        lambda stored: window_change(match, bounds.start, stored),
    )
    if counted.firing is None:
        return None
    if counted.again:
        log.info(
            "re-publishing %s: end %s was counted before",
            counted.firing.execution_id,
            match.end.key,
        )
    return firing_start(match, counted.firing, now)


class FlowTriggers:
    """The scheduler component: `start()` joins the group, `run()` serves until stopped."""

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        catalog: TriggerCatalog,
        windows: FlowWindowRepository,
        stops: TriggerStops | None = None,
    ):
        self._settings = settings
        self._stops = stops  # `stopAfter`: switches triggers off as their executions end
        self._producer = producer
        self._catalog = catalog
        self._windows = windows
        self._cleaned_at = datetime.min.replace(tzinfo=UTC)
        self._tracker = AssignmentTracker()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._catalog_as_of = datetime.min.replace(tzinfo=UTC)
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        """Join the group and fix the start position: ends after this are not missed.

        A join that hangs (seen once on the embedded broker, after a group's members
        had just died) is abandoned and tried again with a new consumer.
        """
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            consumer = make_consumer(
                self._settings,
                group_id=GROUP_ID,
                client_id=f"headrace-flow-triggers-{socket.gethostname()}",
                auto_offset_reset=NEW_GROUP_OFFSET_RESET,
            )
            self._tracker = AssignmentTracker()
            consumer.subscribe([EXECUTIONS.name], listener=self._tracker)
            try:
                async with asyncio.timeout(JOIN_TIMEOUT_S[self._settings.low_latency]):
                    await consumer.start()
                    await pin_new_partitions(consumer, self._tracker)
            except BaseException as exc:
                await consumer.stop()  # a stop while joining leaves no member behind
                if not isinstance(exc, TimeoutError) or attempt == JOIN_ATTEMPTS:
                    raise
                log.warning(
                    "joining %s took over %.0f s; trying again (%d/%d)",
                    GROUP_ID,
                    JOIN_TIMEOUT_S[self._settings.low_latency],
                    attempt + 1,
                    JOIN_ATTEMPTS,
                )
                continue
            self._consumer = consumer
            return

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"

        async def pin() -> None:
            await pin_new_partitions(consumer, self._tracker)

        async def handle(records: list[ConsumerRecord]) -> None:
            events = self._decode(records)
            if events:
                await self._start_downstream(consumer, events, stop)

        await consume(consumer, handle, stop, before_fetch=pin)

    async def _start_downstream(
        self, consumer: AIOKafkaConsumer, events: list[ExecutionEvent], stop: asyncio.Event
    ) -> None:
        await self._catch_up_catalog(events)
        single, several = split_by_conditions(self._catalog.of_kind(FLOW))
        now = datetime.now(UTC)
        starts = [s for event in events for s in starts_for(event, single, now)]
        matches = [m for event in events for m in windowed_matches(event, several)]
        windowed = await self._count_with_retry(matches, now, stop)
        if windowed is None:
            return  # stopped while PostgreSQL was away: nothing is committed
        starts += windowed
        if starts:
            await publish_starts(self._producer, starts)
            log.info("flow triggers started %d executions", len(starts))
        if not await self._apply_stops(events, stop):
            return  # stopped while PostgreSQL or the broker was away: nothing is committed
        try:
            await consumer.commit()
        except CommitFailedError as exc:
            # A rebalance took the partitions: their new owner replays, harmlessly.
            log.warning("offset commit failed after a rebalance: %s", exc)
        await self._forget_old_windows(now)

    async def _count_with_retry(
        self, matches: list[WindowedMatch], now: datetime, stop: asyncio.Event
    ) -> list[TriggerEvent] | None:
        """Count every match in PostgreSQL; the Starts they fired. While the database is
        unreachable, try again (counting is idempotent, so redoing the whole batch is
        safe); None when stopped first."""
        delay = DB_RETRY_FIRST_S
        while True:
            try:
                return [
                    s
                    for m in matches
                    if (s := await count_match(self._windows, m, now)) is not None
                ]
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot count flow trigger ends, retrying in %.1f s: %s", delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
            delay = min(delay * 2, DB_RETRY_MAX_S)

    async def _apply_stops(self, events: list[ExecutionEvent], stop: asyncio.Event) -> bool:
        """Switch off the triggers whose `stopAfter` these ends meet, trying again while
        PostgreSQL or the broker is away (a switch made twice is made once); False when
        stopped first."""
        if self._stops is None:
            return True
        declared = [d for kind in TRIGGER_TYPES for d in self._catalog.of_kind(kind)]
        stops = stops_for(events, declared)
        delay = DB_RETRY_FIRST_S
        while stops:
            try:
                await self._stops.apply(stops)
                return True
            except (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "cannot switch triggers off (stopAfter), retrying in %.1f s: %s", delay, exc
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False
            delay = min(delay * 2, DB_RETRY_MAX_S)
        return True

    async def _forget_old_windows(self, now: datetime) -> None:
        if now - self._cleaned_at < STATE_CLEANUP_INTERVAL:
            return
        self._cleaned_at = now
        try:
            await self._windows.forget_before(now - STATE_RETENTION)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot drop old flow trigger windows, next time then: %s", exc)

    def _decode(self, records: Iterable[Any]) -> list[ExecutionEvent]:
        """Terminal execution snapshots not seen yet; the rest is not ours to read."""
        events = []
        for record in records:
            message = decode(record)
            if not isinstance(message, ExecutionEvent) or message.execution is None:
                continue
            if not message.execution.state.is_terminal:
                continue
            if was_retried(message.execution.trigger):
                continue  # its retry runs on: the chain's last end is the one that counts
            key = (message.execution_id, len(message.execution.histories))
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            events.append(message)
        return events

    async def _catch_up_catalog(self, events: list[ExecutionEvent]) -> None:
        """Read the `flows` topic up to now when an execution ended after our last such
        read: without this, a flow saved just before its upstream ended could miss that
        end (the scheduler's reader of the topic may not have read it yet). One fence
        round trip serves every end that came before it."""
        if max(event.time for event in events) <= self._catalog_as_of:
            return
        as_of = datetime.now(UTC)
        try:
            async with asyncio.timeout(CATCH_UP_TIMEOUT_S):
                await self._catalog.catch_up()
        except (KafkaError, TimeoutError) as exc:
            log.warning("cannot read the flows topic up to now, matching the last read: %r", exc)
            return
        self._catalog_as_of = as_of
