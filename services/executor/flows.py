"""Flow revisions for the executor, loaded from PostgreSQL once and cached.

Revisions are immutable (an update makes a new revision), so a cache entry never goes
stale and needs no invalidation. The gateway stores a revision before it publishes any
trigger for it, so a trigger never names a revision the database lacks.
"""

from __future__ import annotations

from headrace.db.flows import FlowRepository
from headrace.errors import HeadraceError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow


class FlowNotFound(HeadraceError):
    """A trigger or result names a flow revision the database does not hold."""


class FlowCache:
    def __init__(self, repository: FlowRepository) -> None:
        self._repository = repository
        self._flows: dict[tuple[str, str, int], Flow] = {}

    async def latest_revision(self, namespace: str, flow_id: str) -> int | None:
        """The newest live revision (not cached: flows change), None if none."""
        record = await self._repository.get(namespace, flow_id)
        return None if record is None else record.revision

    async def get(self, namespace: str, flow_id: str, revision: int) -> Flow:
        key = (namespace, flow_id, revision)
        flow = self._flows.get(key)
        if flow is None:
            record = await self._repository.get(namespace, flow_id, revision)
            if record is None:
                raise FlowNotFound(f"flow {namespace}.{flow_id} revision {revision} not found")
            flow = load_flow(record.source, f"{namespace}/{flow_id}@{revision}")
            self._flows[key] = flow
        return flow
