"""`stopAfter`: switch a trigger off once an execution it started ends in a listed state.

Kestra's `stopAfter` (on every trigger type): e.g. `stopAfter: [FAILED]` on a schedule
pauses it after a failed run until someone switches it on again. The flow-trigger
component reads every execution end anyway; for each end it asks `stops_for` which
declared trigger started it and whether its `stopAfter` lists the end state, then
`TriggerStops.apply` switches those off exactly as `PUT /api/v1/triggers/...` does:
stored in PostgreSQL first (with the reason, shown by the API), then a `TriggerSwitch`
on the `flows` topic, which every scheduler and gateway honours.

Applied before the offsets of the ends are committed: a crash in between reads the end
again. Storing it again for the same execution answers the stored switch, which is then
published again (a publish that failed after the store is not lost; readers take the
newest); a trigger switched off for another reason is left as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from headrace import codec
from headrace.core.retries import was_retried
from headrace.db.triggers import TriggerKey, TriggerStateRepository
from headrace.flow_log import FlowLog, unique_key
from headrace.messages import ExecutionEvent, TriggerSwitch
from headrace.services.scheduler.catalog import DeclaredTrigger
from headrace.topics.definitions import FLOWS

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Stop:
    """Trigger `key` is to be switched off: `execution_id` ended in `state`."""

    key: TriggerKey
    state: str
    execution_id: str


def stops_for(events: Iterable[ExecutionEvent], declared: Iterable[DeclaredTrigger]) -> list[Stop]:
    """The triggers whose `stopAfter` one of these execution ends meets (pure).

    An execution names what started it in `trigger` (`type`, `id`); only the declared,
    switched-on trigger of that flow, type and id counts.
    """
    by_key = {(d.key, d.trigger.kind): d for d in declared if d.trigger.spec().stop_after}
    stops: dict[TriggerKey, Stop] = {}
    for event in events:
        snapshot = event.execution
        if snapshot is None or not snapshot.state.is_terminal or was_retried(snapshot.trigger):
            continue
        trigger_id, kind = snapshot.trigger.get("id"), snapshot.trigger.get("type")
        if not isinstance(trigger_id, str) or not isinstance(kind, str):
            continue
        key = (snapshot.namespace, snapshot.flow_id, trigger_id)
        found = by_key.get((key, kind))
        if found is not None and snapshot.state in found.trigger.spec().stop_after:
            stops.setdefault(key, Stop(key, str(snapshot.state), event.execution_id))
    return list(stops.values())


class TriggerStops:
    """Switches triggers off for their `stopAfter` (see the module docstring)."""

    def __init__(
        self, states: TriggerStateRepository, producer: AIOKafkaProducer, flows: FlowLog
    ) -> None:
        self._states = states
        self._producer = producer
        self._flows = flows

    async def apply(self, stops: Iterable[Stop]) -> None:
        """Store and publish each switch; raises on a database or broker error (the
        caller retries: storing is idempotent)."""
        for stop in stops:
            state = await self._states.stop_after(stop.key, stop.state, stop.execution_id)
            if state is None:
                continue  # off already, switched by someone else
            switch = TriggerSwitch(*stop.key, True, state.updated_at)
            await self._producer.send_and_wait(
                FLOWS.name, codec.encode(switch), key=unique_key(switch)
            )
            self._flows.note(switch)
            log.warning(
                "trigger %s switched off: execution %s ended %s (stopAfter)",
                "/".join(stop.key),
                stop.execution_id,
                stop.state,
            )
