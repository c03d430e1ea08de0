"""Flows as the gateway serves and changes them: read from its `FlowLog` (memory, no
database), changed by sending a `FlowChange` to the `flows` topic and reading back what
it did (`FlowLog.change`). The topic decides every revision, in its order, so concurrent
saves through any number of gateways get distinct, consecutive revisions; PostgreSQL's
`flows` table is an index of the topic (`headrace.db.flows`).

`apply` changes many flows at once, all or nothing: one `FlowChangeSet` record, which
every reader applies whole (`headrace.flow_log`).

Reads answer from what this gateway has read: a flow saved through it is served at the
next call, one saved through another gateway a fetch later (`find` looks once more).
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from headrace.errors import HeadraceError
from headrace.flow_log import ChangeOutcome, FlowChangeUnsettled, FlowLog
from headrace.messages import FlowChangeAction, FlowChangeItem, FlowRevision
from headrace.topics.definitions import FLOWS, MAX_MESSAGE_BYTES

# How long a change may take to be sent and read back before the caller hears so.
CHANGE_TIMEOUT_S = 10.0


class FlowExistsError(HeadraceError):
    """`create` found a live flow with that namespace and id."""


class FlowsUnavailable(HeadraceError):
    """The `flows` topic could not be written or read in time: the change may or may not
    be applied (its message says which)."""


class ChangesTooLarge(HeadraceError):
    """A set of changes too large for one record of the `flows` topic: nothing changed."""


class SaveResult(NamedTuple):
    revision: int
    created: bool  # True when a new revision was written


class FlowStore:
    def __init__(self, flow_log: FlowLog, timeout_s: float = CHANGE_TIMEOUT_S) -> None:
        self._log = flow_log
        self._timeout_s = timeout_s
        self._looking: asyncio.Future[None] | None = None  # `find`'s read up to date

    async def save(self, namespace: str, id: str, source: str) -> SaveResult:
        """Store `source` as the flow's latest revision unless it already is."""
        # Read up to date first: an unchanged source (most of a folder applied again) is
        # then answered without a record that would stay on the topic for good.
        await self._sync()
        latest = self.get(namespace, id)
        if latest is not None and latest.source == source:
            return SaveResult(latest.revision, False)
        outcome = await self._change(namespace, id, FlowChangeAction.SAVE, source)
        assert outcome.revision is not None  # a save always leaves a live flow
        return SaveResult(outcome.revision, outcome.written)

    async def create(self, namespace: str, id: str, source: str) -> int:
        """Store a flow that must not exist yet (deleted ones may come back)."""
        await self._sync()  # as in `save`: a flow known to exist is refused without a record
        exists = FlowExistsError(f"flow {namespace}.{id} already exists")
        if self._log.latest_read(namespace, id) is not None:
            raise exists
        outcome = await self._change(namespace, id, FlowChangeAction.CREATE, source)
        if not outcome.written:  # another gateway's create came first
            raise exists
        assert outcome.revision is not None
        return outcome.revision

    async def delete(self, namespace: str, id: str) -> bool:
        """Write a tombstone revision; False when there was no live flow."""
        await self._sync()  # as in `save`: deleting an unknown flow sends nothing
        if self._log.latest_read(namespace, id) is None:
            return False
        outcome = await self._change(namespace, id, FlowChangeAction.DELETE, "")
        return outcome.written

    async def apply(self, changes: list[FlowChangeItem]) -> list[ChangeOutcome]:
        """Apply `changes` as one: what each did, in their order, once read back; none
        applied if any error is raised (`FlowsUnavailable` says when that is not known
        yet). `ChangesTooLarge` when they do not fit in one record."""
        try:
            return await self._log.change_set(changes, self._timeout_s)
        except MessageSizeTooLargeError as exc:
            raise ChangesTooLarge(
                f"these {len(changes)} flow changes are too large to apply as one: the"
                f" {FLOWS.name} topic takes records of up to {MAX_MESSAGE_BYTES:,} bytes"
                " (nothing was changed); apply fewer flows at a time (each part is then"
                " all or nothing)"
            ) from exc
        except FlowChangeUnsettled as exc:
            raise FlowsUnavailable(f"{exc}: it may yet be applied; read the flows to see") from exc
        except (KafkaError, HeadraceError) as exc:  # not sent
            raise FlowsUnavailable(
                f"the changes were not sent (nothing was changed): {exc!r}"
            ) from exc

    async def read_up_to_date(self) -> None:
        """Read the topic up to now: `get` and `list` then answer with every change
        acknowledged before the call (`FlowsUnavailable` if it cannot)."""
        await self._sync()

    def history(self, namespace: str, id: str) -> list[FlowRevision]:
        """Every revision of the flow read, tombstones included, oldest first; empty for
        a flow never stored."""
        return self._log.history(namespace, id)

    def get(self, namespace: str, id: str, revision: int | None = None) -> FlowRevision | None:
        """The latest live revision, or the given one (None for a tombstone or unknown)."""
        number = self._log.latest_read(namespace, id) if revision is None else revision
        found = None if number is None else self._log.revision(namespace, id, number)
        return None if found is None or found.deleted else found

    async def find(
        self, namespace: str, id: str, revision: int | None = None
    ) -> FlowRevision | None:
        """As `get`, looking once more after reading the topic up to date when it finds
        nothing: a flow saved a moment ago through another gateway is found. For
        authenticated callers only (reading up to date writes a fence to the topic)."""
        found = self.get(namespace, id, revision)
        if found is None:
            # Misses at once share one read up to date: a fence each would let any reader
            # grow the topic (the embedded broker keeps every record) request by request.
            if self._looking is None or self._looking.done():
                self._looking = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._looking)
            found = self.get(namespace, id, revision)
        return found

    def list(self, namespace: str | None = None) -> list[FlowRevision]:
        """Latest revision of each live flow, in `namespace` and its sub-namespaces, by
        namespace and id."""
        found = []
        for flow_namespace, flow_id, number in sorted(self._log.latest_revisions()):
            if namespace is None or _within(flow_namespace, namespace):
                revision = self._log.revision(flow_namespace, flow_id, number)
                assert revision is not None
                found.append(revision)
        return found

    def page(
        self, namespace: str | None = None, page: int = 1, size: int = 100
    ) -> tuple[list[FlowRevision], int]:
        """One page of `list`, and the number of flows in all."""
        if page < 1 or size < 1:
            raise ValueError("page and size must be >= 1")
        flows = self.list(namespace)
        return flows[(page - 1) * size : page * size], len(flows)

    async def _sync(self) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._log.sync()
        except (KafkaError, TimeoutError, HeadraceError) as exc:
            raise FlowsUnavailable(
                f"the flows topic could not be read up to date (nothing was changed): {exc!r}"
            ) from exc

    async def _change(
        self, namespace: str, id: str, action: FlowChangeAction, source: str
    ) -> ChangeOutcome:
        try:
            return await self._log.change(namespace, id, action, source, self._timeout_s)
        except FlowChangeUnsettled as exc:
            raise FlowsUnavailable(f"{exc}: it may yet be applied; read the flow to see") from exc
        except (KafkaError, HeadraceError) as exc:  # not sent
            raise FlowsUnavailable(
                f"the change was not sent (nothing was changed): {exc!r}"
            ) from exc


def _within(flow_namespace: str, namespace: str) -> bool:
    return flow_namespace == namespace or flow_namespace.startswith(namespace + ".")
