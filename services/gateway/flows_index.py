"""The `flows` table: the gateway's reader of the `flows` topic copies every revision
into PostgreSQL, for SQL readers.

The topic decides every revision (`headrace.flow_log`); this keeps the table equal to
what the reader read. The gateway does it, not the indexer, because it follows the
topic already: a reader of its own in the indexer cost the embedded broker ~1.5% of a
core at idle (docs/benchmarks.md). Every gateway writes every revision (the topic has
one partition and few records): the writes are idempotent, so gateways agree. A
revision PostgreSQL refuses is logged and left out, as the indexer does with the other
topics; while PostgreSQL is away or failing, the loop waits for it and the gateway
serves on. A gateway behind the others (a fetch) writes what it has read: the same rows,
except around a retraction of an earlier release's revision, which the last gateway to
read it settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg

from headrace.db.flows import FlowIndex
from headrace.db.indexing import DATA_ERRORS
from headrace.db.pool import UNREACHABLE
from headrace.errors import HeadraceError
from headrace.flow_log import FlowLog
from headrace.messages import FlowRevision
from headrace.topics.definitions import FLOWS

log = logging.getLogger(__name__)

# Back-off after PostgreSQL was unreachable, before the same revisions are written again.
RETRY_DELAY_S = 1.0
# Revisions per statement: a first pass writes them all, sources included.
WRITE_CHUNK = 500


async def index_flows(flow_log: FlowLog, index: FlowIndex, stop: asyncio.Event) -> None:
    """Write every revision `flow_log` reads into `index` until `stop` is set; raises if
    `flow_log` stops following the topic."""
    written: dict[str, FlowRevision] = {}  # by record key: what this loop wrote
    dropped: set[tuple[str, str, int]] = set()  # retracted revisions it deleted
    while not stop.is_set():
        seen = flow_log.version
        revisions = flow_log.revisions()
        changed = [r for r in revisions if written.get(r.key) != r]
        # Every retraction the topic holds, not only those read since this loop began:
        # a row of a revision retracted before a restart must go too.
        gone = sorted(set(flow_log.retracted()) - dropped)
        for start in range(0, max(len(changed), len(gone)), WRITE_CHUNK):
            chunk = slice(start, start + WRITE_CHUNK)
            await _write_until_done(index, changed[chunk], gone[chunk], stop)
        if changed or gone:
            log.debug("indexed %d flow revisions, dropped %d", len(changed), len(gone))
        written = {r.key: r for r in revisions}
        dropped = (dropped | set(gone)) & set(flow_log.retracted())
        changes = asyncio.ensure_future(flow_log.wait_changed(seen))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {changes, stopping, flow_log.following}, return_when=asyncio.FIRST_COMPLETED
        )
        changes.cancel()
        stopping.cancel()
        following = flow_log.following
        if following.done() and not stop.is_set():
            cause = None if following.cancelled() else following.exception()
            raise HeadraceError(f"stopped following the {FLOWS.name} topic") from cause


async def _write_until_done(
    index: FlowIndex,
    revisions: Sequence[FlowRevision],
    gone: Sequence[tuple[str, str, int]],
    stop: asyncio.Event,
) -> None:
    """Write, waiting for PostgreSQL as long as it fails (unreachable, out of
    connections, read-only in a failover...): the gateway serves on meanwhile. Returns
    without writing once `stop` is set."""
    while not stop.is_set():
        try:
            try:
                await index.write(revisions, gone)
            except DATA_ERRORS as exc:
                log.warning("flow revisions refused (%s), writing them one by one", exc)
                for revision in revisions:
                    await _write_one(index, [revision], [])
                await _write_one(index, [], gone)
            return
        except (*UNREACHABLE, asyncpg.PostgresError) as exc:
            log.warning("could not write the flows table, retrying: %r", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_DELAY_S)


async def _write_one(
    index: FlowIndex, revisions: Sequence[FlowRevision], gone: Sequence[tuple[str, str, int]]
) -> None:
    try:
        await index.write(revisions, gone)
    except DATA_ERRORS as exc:
        what = revisions[0].key if revisions else f"{len(gone)} retracted revisions"
        log.error("skipping flow revision %s, PostgreSQL refused it: %s", what, exc)
