"""Which flows declare which triggers: the latest revision of every live flow.

The scheduler's components ask the catalog for the triggers of their type. It is built
from the `flows` topic (`headrace.flow_log.FlowLog`), which carries every revision and
every runtime switch, and rebuilt each time the topic brings a change: no database read,
so schedules, flow triggers and Kafka triggers keep their view of the flows while
PostgreSQL is away. Revisions are parsed once (the log keeps them parsed).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from headrace.flow.errors import FlowValidationError
from headrace.flow.model import Flow, Trigger
from headrace.flow_log import FlowLog

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeclaredTrigger:
    flow: Flow
    revision: int
    trigger: Trigger

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.flow.namespace, self.flow.id, self.trigger.id)


class TriggerCatalog:
    def __init__(self, flows: FlowLog) -> None:
        self._flows = flows
        self._declared: list[DeclaredTrigger] = []
        self._invalid: set[tuple[str, str, int]] = set()
        self._built_from = -1  # the log's version the triggers were built from

    def of_kind(self, kind: str) -> list[DeclaredTrigger]:
        """Triggers of `kind` not disabled, in YAML or by the runtime switch."""
        return [d for d in self._declared if d.trigger.kind == kind]

    def refresh(self) -> None:
        """Rebuild from what the log has read (nothing to do if it read no change)."""
        version = self._flows.version
        if version == self._built_from:
            return
        declared: list[DeclaredTrigger] = []
        for namespace, flow_id, revision in self._flows.latest_revisions():
            try:
                flow = self._flows.parsed(namespace, flow_id, revision)
            except FlowValidationError as exc:  # stored before a stricter validator
                key = (namespace, flow_id, revision)
                if key not in self._invalid:  # once, not every refresh
                    self._invalid.add(key)
                    log.warning("flow %s/%s no longer validates: %s", namespace, flow_id, exc)
                continue
            if flow.disabled:
                continue
            switched_off = self._flows.switched_off(namespace, flow_id)
            declared += [
                DeclaredTrigger(flow, revision, trigger)
                for trigger in flow.triggers
                if not trigger.disabled and trigger.id not in switched_off
            ]
        self._declared = declared
        self._built_from = version

    async def catch_up(self) -> None:
        """Rebuild from everything acknowledged on the topic before this call (a fence
        round trip: `FlowLog.sync`)."""
        await self._flows.sync()
        self.refresh()

    async def run(self, stop: asyncio.Event) -> None:
        """Rebuild at each change the log reads, until `stop`."""
        while not stop.is_set():
            changed = asyncio.create_task(self._flows.wait_changed(self._built_from))
            stopped = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                stopped.cancel()
            self.refresh()
