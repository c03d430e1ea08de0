"""Which flows declare which triggers: the latest revision of every live flow, refreshed.

The scheduler's components ask the catalog for the triggers of their type. It polls
PostgreSQL (flows are few and change rarely; a poll is simpler and sturdier than a
change feed), parsing a revision only when its source changed (`load_flow` caches).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from headrace.db.flows import FlowRepository
from headrace.db.triggers import TriggerStateRepository
from headrace.flow.errors import FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow, Trigger

log = logging.getLogger(__name__)

# Seconds between two reads of the flows: a new or changed trigger is live within this.
REFRESH_INTERVAL_S = 2.0


@dataclass(frozen=True, slots=True)
class DeclaredTrigger:
    flow: Flow
    revision: int
    trigger: Trigger

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.flow.namespace, self.flow.id, self.trigger.id)


class TriggerCatalog:
    def __init__(self, flows: FlowRepository, states: TriggerStateRepository) -> None:
        self._flows = flows
        self._states = states
        self._declared: list[DeclaredTrigger] = []
        self._invalid: set[tuple[str, str, int]] = set()
        self.loaded = asyncio.Event()

    def of_kind(self, kind: str) -> list[DeclaredTrigger]:
        """Triggers of `kind` not disabled, in YAML or by the runtime switch."""
        return [d for d in self._declared if d.trigger.kind == kind]

    async def refresh(self) -> None:
        declared: list[DeclaredTrigger] = []
        switched_off = await self._states.disabled_keys()
        for record in await self._flows.list():
            try:
                flow = load_flow(record.source, f"{record.namespace}/{record.id}@{record.revision}")
            except FlowValidationError as exc:  # stored before a stricter validator
                key = (record.namespace, record.id, record.revision)
                if key not in self._invalid:  # once, not every refresh
                    self._invalid.add(key)
                    log.warning(
                        "flow %s/%s no longer validates: %s", record.namespace, record.id, exc
                    )
                continue
            if flow.disabled:
                continue
            declared += [
                DeclaredTrigger(flow, record.revision, trigger)
                for trigger in flow.triggers
                if not trigger.disabled
                and (flow.namespace, flow.id, trigger.id) not in switched_off
            ]
        self._declared = declared
        self.loaded.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The last good read stays in use: a database blip must not stop schedules.
                log.error("cannot read the flows, keeping the last known triggers: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_INTERVAL_S)
