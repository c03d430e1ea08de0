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
merely redundant.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

log = logging.getLogger(__name__)

# No execution id or flow key can be this: ids are printable, and this starts with NUL.
FENCE_KEY = b"\x00headrace-recovery-fence"


class FencedRecovery(Recovery):
    """Faust's recovery with the changelog ends taken from fences we wrote ourselves."""

    async def _build_highwaters(
        self, consumer: Any, tps: set[TP], destination: Counter[TP], title: str
    ) -> None:
        producer = self.app.producer
        highwaters: dict[TP, int] = {}
        for tp in tps:
            sent = await producer.send_and_wait(tp.topic, FENCE_KEY, None, tp.partition, None, None)
            # Faust's highwater is the offset of the last record to read (end - 1).
            highwaters[tp] = sent.offset
        if highwaters:
            log.info(
                "recovering %s changelog partitions up to their fences: %s",
                title,
                ", ".join(
                    f"{tp.topic}[{tp.partition}]@{end}" for tp, end in sorted(highwaters.items())
                ),
            )
        destination.clear()
        destination.update(highwaters)


class FencedTableManager(TableManager):
    """Faust's table manager with `FencedRecovery` (`faust.App(TableManager=...)`)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = FencedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
