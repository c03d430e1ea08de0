"""The indexer's copy of the `flows` topic into PostgreSQL's `flows` table.

The topic decides every revision (`headrace.flow_log`); this keeps the table equal to
what a `FlowLog` read, for SQL readers. Every indexer process writes every revision (the
topic has one partition and few records): the writes are idempotent, so two indexers
agree. A revision PostgreSQL refuses is logged and left out, as the other topics' are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

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


async def index_flows(flow_log: FlowLog, index: FlowIndex, stop: asyncio.Event) -> None:
    """Write every revision `flow_log` reads into `index` until `stop` is set; raises if
    `flow_log` stops following the topic."""
    written: dict[str, FlowRevision] = {}  # by record key: what the table holds
    while not stop.is_set():
        seen = flow_log.version
        current = {revision.key: revision for revision in flow_log.revisions()}
        changed = [r for key, r in current.items() if written.get(key) != r]
        gone = [r for key, r in written.items() if key not in current]  # retracted
        if changed or gone:
            await _write_until_done(index, changed, gone, stop)
            written = current
            log.debug("indexed %d flow revisions, dropped %d", len(changed), len(gone))
        changes = asyncio.ensure_future(flow_log.wait_changed(seen))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {changes, stopping, flow_log.following}, return_when=asyncio.FIRST_COMPLETED
        )
        changes.cancel()
        stopping.cancel()
        if flow_log.following.done() and not stop.is_set():
            raise HeadraceError(f"stopped following the {FLOWS.name} topic")


async def _write_until_done(
    index: FlowIndex,
    revisions: Sequence[FlowRevision],
    gone: Sequence[FlowRevision],
    stop: asyncio.Event,
) -> None:
    while True:
        try:
            try:
                await index.write(revisions, gone)
            except DATA_ERRORS as exc:
                log.warning("flow revisions refused (%s), writing them one by one", exc)
                await _write_each(index, revisions)
                await index.write([], gone)
            return
        except UNREACHABLE as exc:
            log.warning("PostgreSQL unavailable, retrying the flow revisions: %s", exc)
            if stop.is_set():
                raise
            await asyncio.sleep(RETRY_DELAY_S)


async def _write_each(index: FlowIndex, revisions: Sequence[FlowRevision]) -> None:
    for revision in revisions:
        try:
            await index.write([revision], [])
        except DATA_ERRORS as exc:
            log.error("skipping flow revision %s, PostgreSQL refused it: %s", revision.key, exc)
