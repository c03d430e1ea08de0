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

from headrace.db.flows import FlowRepository
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
    def __init__(self, flows: FlowRepository) -> None:
        self._flows = flows
        self._declared: list[DeclaredTrigger] = []
        self.loaded = asyncio.Event()

    def of_kind(self, kind: str) -> list[DeclaredTrigger]:
        """Triggers of `kind` whose flow and trigger are not disabled in YAML."""
        return [d for d in self._declared if d.trigger.kind == kind]

    async def refresh(self) -> None:
        declared: list[DeclaredTrigger] = []
        for record in await self._flows.list():
            try:
                flow = load_flow(record.source, f"{record.namespace}/{record.id}@{record.revision}")
            except FlowValidationError as exc:  # stored before a stricter validator
                log.warning("flow %s/%s no longer validates: %s", record.namespace, record.id, exc)
                continue
            if flow.disabled:
                continue
            declared += [
                DeclaredTrigger(flow, record.revision, trigger)
                for trigger in flow.triggers
                if not trigger.disabled
            ]
        self._declared = declared
        self.loaded.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_INTERVAL_S)
