"""Table recovery that reads each changelog partition to its real end.

Faust rebuilds a table by reading its changelog from the start up to the partition's end
offset, as the broker reports it. The embedded broker reports it wrong: the base offset of
the partition's last record batch plus one, not its last offset plus one (a batch of 5
records at offsets 1-5 reports 2). Recovery then stops inside the last batch, and the
executions whose latest state sits in its tail come back older (or not at all): their
events are ignored as duplicates or dropped, and they stay RUNNING or PAUSED for good.

So recovery never asks the broker where a partition ends. The new owner of a changelog
partition first appends a fence to it: a tombstone under a reserved key, sent alone and
awaited, whose offset the producer's acknowledgement gives (that offset is right on every
broker). Everything written before the fence has a lower offset, so reading up to and
including the fence reads it all. The tombstone deletes nothing real (no execution or
flow has that key) and compaction removes it in time; one record per partition and
rebalance is the whole cost. The same reasoning holds on Apache Kafka, where the fence is
merely redundant. A fence marks the end of what was written before it; an owner that lost
the partition but still had a batch in flight could write after it (Faust does not wait
for in-flight work at a rebalance): that write is not recovered, and its inputs were
not committed either, so they are applied again.

With the RocksDB store (store.py), recovery starts after the last offset the store on
disk holds, so a restart reads only what was written since. The fence also tells when
that store cannot be trusted: it holds an offset at or past the new fence.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from headrace.services.executor.store import RocksStore

log = logging.getLogger(__name__)

# No execution id or flow key can be this: ids are printable, and this starts with NUL.
FENCE_KEY = b"\x00headrace-recovery-fence"
# The fences of all partitions are sent at once; a broker that acknowledges none of them
# in this time is not there.
FENCE_TIMEOUT_S = 60.0
EXIT_NO_FENCE = 70  # EX_SOFTWARE, as for any I/O failure of the executor (app.py)


class FencedRecovery(Recovery):
    """Faust's recovery with the ends of active changelog partitions taken from fences we
    wrote ourselves."""

    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        if title != "active":
            # Standby partitions (none by default) belong to another owner, who writes
            # them: a fence there would mean nothing. Faust's way.
            await super()._build_highwaters(consumer, tps, destination, title)
            return
        ordered = sorted(tps)
        try:
            async with asyncio.timeout(FENCE_TIMEOUT_S):
                sent = await asyncio.gather(*(self._fence(tp) for tp in ordered))
        except TimeoutError:
            # Faust would take this for a stop and leave recovery for good, with every
            # partition paused: exit instead, and let the supervisor start us again.
            log.critical("no fence acknowledged in %.0f s; exiting", FENCE_TIMEOUT_S)
            os._exit(EXIT_NO_FENCE)
        # Faust's highwater is the offset of the last record to read (end - 1).
        highwaters = {tp: metadata.offset for tp, metadata in zip(ordered, sent, strict=True)}
        if highwaters:
            log.info(
                "recovering changelog partitions up to their fences: %s",
                ", ".join(f"{tp.topic}[{tp.partition}]@{end}" for tp, end in highwaters.items()),
            )
        destination.clear()
        destination.update(highwaters)
        for tp, fence in highwaters.items():
            self._forget_if_stale(tp, fence)

    def _forget_if_stale(self, tp: TP, fence: int) -> None:
        """A store on disk that holds an offset at or past our new fence was written from
        another changelog (the topic was deleted and made again, or the broker's data
        wiped): recover this partition from scratch instead of trusting it."""
        held = self.active_offsets.get(tp)
        if held is None or held < fence:
            return
        store = self.tp_to_table[tp].data
        if not isinstance(store, RocksStore):
            return
        log.warning(
            "%s[%d]: the local store holds offset %d, past the changelog's end %d; "
            "it belongs to an older topic: discarding it and recovering from the changelog",
            tp.topic,
            tp.partition,
            held,
            fence,
        )
        store.reset_partition(tp.partition)
        self.active_offsets[tp] = None  # type: ignore[assignment]  # Faust's "from the start"

    async def _fence(self, tp: TP) -> Any:
        return await self.app.producer.send_and_wait(
            tp.topic, FENCE_KEY, None, tp.partition, None, None
        )


class FencedTableManager(TableManager):
    """Faust's table manager with `FencedRecovery` (`faust.App(TableManager=...)`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FencedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
