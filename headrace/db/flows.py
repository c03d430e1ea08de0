"""The `flows` table: every flow revision on the `flows` topic, for SQL readers.

The topic is where revisions are decided (`headrace.flow_log`); the gateway copies each
one here (`services/gateway/flows_index.py`), so this table trails the topic by a
fetch. At start, the gateway and the scheduler publish what this table holds and the
topic lacks (`headrace.flow_log.publish_stored`): revisions stored here by a release
that kept flows in PostgreSQL, or a topic that lost its data.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from headrace.messages import FlowRevision

_UPSERT = """
INSERT INTO flows AS f (namespace, id, revision, source, deleted, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::bool[], $6::timestamptz[])
ON CONFLICT (namespace, id, revision) DO UPDATE
SET source = EXCLUDED.source, deleted = EXCLUDED.deleted, created_at = EXCLUDED.created_at
WHERE (f.source, f.deleted, f.created_at)
    IS DISTINCT FROM (EXCLUDED.source, EXCLUDED.deleted, EXCLUDED.created_at)
"""

_DELETE = """
DELETE FROM flows f USING unnest($1::text[], $2::text[], $3::int[]) AS gone(namespace, id, revision)
WHERE (f.namespace, f.id, f.revision) = (gone.namespace, gone.id, gone.revision)
"""


class FlowIndex:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def write(
        self, revisions: Sequence[FlowRevision], gone: Sequence[tuple[str, str, int]]
    ) -> None:
        """Store `revisions` as they are and drop `gone` (namespace, flow id, number of
        revisions retracted from the topic), in one transaction; a replay changes
        nothing."""
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    await self._write(conn, revisions, gone)
            except asyncpg.exceptions.InternalClientError:
                conn.terminate()  # out of step with the server (db/pool.py): not reused
                raise

    @staticmethod
    async def _write(
        conn: asyncpg.Connection,
        revisions: Sequence[FlowRevision],
        gone: Sequence[tuple[str, str, int]],
    ) -> None:
        if revisions:
            await conn.execute(
                _UPSERT,
                [r.namespace for r in revisions],
                [r.flow_id for r in revisions],
                [r.revision for r in revisions],
                [r.source for r in revisions],
                [r.deleted for r in revisions],
                [r.created_at for r in revisions],
            )
        if gone:
            await conn.execute(
                _DELETE, [g[0] for g in gone], [g[1] for g in gone], [g[2] for g in gone]
            )

    async def all_revisions(self) -> list[FlowRevision]:
        """Every revision of every flow, tombstones included."""
        rows = await self._pool.fetch(
            "SELECT namespace, id, revision, source, created_at, deleted FROM flows"
            " ORDER BY namespace, id, revision"
        )
        return [
            FlowRevision(
                r["namespace"], r["id"], r["revision"], r["source"], r["created_at"], r["deleted"]
            )
            for r in rows
        ]
