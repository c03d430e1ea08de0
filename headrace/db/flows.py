"""Flow revisions in PostgreSQL: every version of a flow's YAML, as written.

A save writes a new revision only when the source differs from the latest one; a delete
writes a tombstone revision (same source, `deleted`), after which the flow is gone for
readers but its old revisions stay readable by number (executions still running them).
Saves of one flow are serialised by a transaction-scoped advisory lock on its key, so
concurrent saves get distinct, consecutive revisions. `revision_log`, when given, gets
every new revision before its transaction commits (the gateway publishes it to the
`flows` topic, `headrace.flow_log`): if that fails, nothing is stored; if the commit
fails after it, the revision is retracted from the log, still under the lock (so no
later save of that revision number is retracted with it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

import asyncpg

from headrace.errors import HeadraceError
from headrace.messages import FlowRevision

log = logging.getLogger(__name__)


class FlowExistsError(HeadraceError):
    """`create` found a live flow with that namespace and id."""


@dataclass(frozen=True, slots=True)
class FlowRecord:
    namespace: str
    id: str
    revision: int
    source: str
    created_at: datetime
    deleted: bool = False


class SaveResult(NamedTuple):
    revision: int
    created: bool  # True when a new revision was written


_COLUMNS = "namespace, id, revision, source, created_at, deleted"

_LATEST = f"""
SELECT {_COLUMNS} FROM flows
WHERE namespace = $1 AND id = $2
ORDER BY revision DESC LIMIT 1
"""


# Latest revision of each live flow in namespace $1 (NULL: all) and its sub-namespaces.
_LIVE = f"""
SELECT * FROM (
    SELECT DISTINCT ON (namespace, id) {_COLUMNS} FROM flows
    WHERE $1::text IS NULL OR namespace = $1 OR starts_with(namespace, $1 || '.')
    ORDER BY namespace, id, revision DESC
) latest
WHERE NOT deleted
"""


def _record(row: asyncpg.Record) -> FlowRecord:
    return FlowRecord(**dict(row))


class RevisionLog(Protocol):
    """Where new revisions go before they are committed (`headrace.flow_log`)."""

    async def publish(self, revision: FlowRevision) -> None: ...

    async def retract(self, revision: FlowRevision) -> None: ...

    def committed(self, revision: FlowRevision) -> None:
        """`revision`, published before, is stored for good."""


class FlowRepository:
    def __init__(self, pool: asyncpg.Pool, revision_log: RevisionLog | None = None) -> None:
        self._pool = pool
        self._log = revision_log

    async def save(self, namespace: str, id: str, source: str) -> SaveResult:
        """Store `source` as the flow's latest revision unless it already is."""
        return await self._save(namespace, id, source, if_absent=False)

    async def create(self, namespace: str, id: str, source: str) -> int:
        """Store a flow that must not exist yet (deleted ones may come back)."""
        result = await self._save(namespace, id, source, if_absent=True)
        return result.revision

    async def _save(self, namespace: str, id: str, source: str, *, if_absent: bool) -> SaveResult:
        async with self._pool.acquire() as conn, self._transaction(conn) as published:
            await _lock_flow(conn, namespace, id)
            latest = await conn.fetchrow(_LATEST, namespace, id)
            if latest is not None and not latest["deleted"]:
                if if_absent:
                    raise FlowExistsError(f"flow {namespace}.{id} already exists")
                if latest["source"] == source:
                    return SaveResult(latest["revision"], False)
            revision = 1 if latest is None else latest["revision"] + 1
            await self._insert(conn, published, namespace, id, revision, source, deleted=False)
            return SaveResult(revision, True)

    async def get(self, namespace: str, id: str, revision: int | None = None) -> FlowRecord | None:
        """The latest live revision, or the given one (None for a tombstone or unknown)."""
        if revision is None:
            row = await self._pool.fetchrow(_LATEST, namespace, id)
        else:
            row = await self._pool.fetchrow(
                f"SELECT {_COLUMNS} FROM flows WHERE namespace = $1 AND id = $2 AND revision = $3",
                namespace,
                id,
                revision,
            )
        if row is None or row["deleted"]:
            return None
        return _record(row)

    async def list(self, namespace: str | None = None) -> list[FlowRecord]:
        """Latest revision of each live flow, in `namespace` and its sub-namespaces."""
        rows = await self._pool.fetch(f"{_LIVE} ORDER BY namespace, id", namespace)
        return [_record(r) for r in rows]

    async def page(
        self, namespace: str | None = None, page: int = 1, size: int = 100
    ) -> tuple[list[FlowRecord], int]:
        """One page of `list` (by namespace and id), and the number of flows in all."""
        if page < 1 or size < 1:
            raise ValueError("page and size must be >= 1")
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            total = await conn.fetchval(f"SELECT count(*) FROM ({_LIVE}) live", namespace)
            rows = await conn.fetch(
                f"{_LIVE} ORDER BY namespace, id LIMIT $2 OFFSET $3",
                namespace,
                size,
                (page - 1) * size,
            )
        return [_record(r) for r in rows], total

    async def revisions(self, namespace: str, id: str) -> list[int]:
        """Every revision number of a flow, tombstones included, oldest first."""
        rows = await self._pool.fetch(
            "SELECT revision FROM flows WHERE namespace = $1 AND id = $2 ORDER BY revision",
            namespace,
            id,
        )
        return [r["revision"] for r in rows]

    async def delete(self, namespace: str, id: str) -> bool:
        """Write a tombstone revision; False when there was no live flow."""
        async with self._pool.acquire() as conn, self._transaction(conn) as published:
            await _lock_flow(conn, namespace, id)
            latest = await conn.fetchrow(_LATEST, namespace, id)
            if latest is None or latest["deleted"]:
                return False
            revision = latest["revision"] + 1
            source = latest["source"]
            await self._insert(conn, published, namespace, id, revision, source, deleted=True)
            return True

    @contextlib.asynccontextmanager
    async def _transaction(self, conn: asyncpg.Connection) -> AsyncIterator[list[FlowRevision]]:
        """A transaction that retracts the revisions it published unless it commits."""
        published: list[FlowRevision] = []
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield published
        except BaseException:
            await self._retract(published)  # before the rollback releases the lock
            await transaction.rollback()
            raise
        try:
            await transaction.commit()
        except BaseException:
            # Stored or not, nobody can tell from here (a connection lost in the commit):
            # look again under the lock, which the failed transaction no longer holds.
            await self._settle(published)
            raise
        if self._log is not None:
            for revision in published:
                self._log.committed(revision)

    async def _settle(self, published: list[FlowRevision]) -> None:
        """After a commit of unknown outcome: publish what was stored after all, retract
        what was not, and leave alone a revision number a later save took meanwhile."""
        if self._log is None:
            return
        for revision in published:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await _lock_flow(conn, revision.namespace, revision.flow_id)
                    row = await conn.fetchrow(
                        "SELECT source, deleted FROM flows"
                        " WHERE namespace = $1 AND id = $2 AND revision = $3",
                        revision.namespace,
                        revision.flow_id,
                        revision.revision,
                    )
                    if row is None:
                        await self._log.retract(revision)
                    elif (row["source"], row["deleted"]) == (revision.source, revision.deleted):
                        await self._log.publish(revision)
                        self._log.committed(revision)
            except Exception as exc:  # the save's own error is the one to report
                log.warning(
                    "flow %s.%s revision %d: its commit failed and it could not be settled"
                    " (a gateway or scheduler publishes it at its next start if it was"
                    " stored): %s",
                    revision.namespace,
                    revision.flow_id,
                    revision.revision,
                    exc,
                )

    async def _retract(self, published: list[FlowRevision]) -> None:
        if self._log is None:
            return
        for revision in published:
            try:
                await self._log.retract(revision)
            except Exception as exc:  # the save's own error is the one to report
                log.warning(
                    "flow %s.%s revision %d was not stored and could not be retracted: %s",
                    revision.namespace,
                    revision.flow_id,
                    revision.revision,
                    exc,
                )

    async def _insert(
        self,
        conn: asyncpg.Connection,
        published: list[FlowRevision],
        namespace: str,
        id: str,
        revision: int,
        source: str,
        *,
        deleted: bool,
    ) -> None:
        created_at = await conn.fetchval(
            "INSERT INTO flows (namespace, id, revision, source, deleted)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
            namespace,
            id,
            revision,
            source,
            deleted,
        )
        if self._log is not None:
            stored = FlowRevision(namespace, id, revision, source, created_at, deleted)
            published.append(stored)  # first: a publish that failed may still have landed
            await self._log.publish(stored)

    async def all_revisions(self) -> list[FlowRevision]:
        """Every revision of every flow, tombstones included."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM flows ORDER BY namespace, id, revision"
        )
        return [
            FlowRevision(
                r["namespace"], r["id"], r["revision"], r["source"], r["created_at"], r["deleted"]
            )
            for r in rows
        ]


async def _lock_flow(conn: asyncpg.Connection, namespace: str, id: str) -> None:
    # Held until the transaction ends; the PK would reject a duplicate revision anyway,
    # the lock turns that error into a wait.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"flow/{namespace}/{id}"
    )
