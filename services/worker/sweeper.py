"""The file storage's retention: each worker removes the files of old executions.

Files go when their execution does: the executor keeps an ended execution for
`HEADRACE_EXECUTION_RETENTION`, and a folder of execution files none of which changed for
as long is removed (`Storage.sweep_executions`). Every worker sweeps, at start and then
hourly: no extra service or leader to run, and two workers sweeping the same folder at
once only find less to do.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import isodate

from headrace.storage import Storage

log = logging.getLogger(__name__)

# Retention is counted in days: an hour late costs a little disk, and walking the whole
# storage more often would cost every worker I/O for nothing.
SWEEP_INTERVAL_S = 3600.0


async def sweep_periodically(
    storage: Storage,
    retention: timedelta,
    *,
    interval_s: float = SWEEP_INTERVAL_S,
    label: str = "worker",
) -> None:
    """Sweep now, then every `interval_s`, until cancelled (it stops with the worker).
    A failing sweep is logged and tried again at the next round: files kept a little
    longer never justify stopping a worker."""
    older_than_s = retention.total_seconds()
    while True:
        try:
            # Blocking (a walk of the folder tree): off the event loop.
            removed = await asyncio.to_thread(storage.sweep_executions, older_than_s)
        except Exception as exc:
            log.warning(
                "%s: sweeping the file storage %s failed (next try in %g s): %r",
                label,
                storage.root,
                interval_s,
                exc,
            )
        else:
            log.info(
                "%s: removed the stored files of %d execution(s) unchanged for %s",
                label,
                removed,
                isodate.duration_isoformat(retention),
            )
        await asyncio.sleep(interval_s)
