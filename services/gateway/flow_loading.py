"""Loading flows for the gateway: never on the event loop, never for long.

Every YAML text the gateway parses and validates (a flow sent to it, or a stored one it
needs) goes to a small pool of worker processes, with a hard time limit: a worker still
busy after `LOAD_TIMEOUT_S` is killed and replaced, and the request gets a
`FlowValidationError` saying so. Why processes and not threads: the parser and pydantic
hold the GIL, so a thread still stalls the loop. Measured on two cores, six loads of a
6,000-task flow at once: the loop's worst delay was ~120 ms from a thread pool, ~13 ms
from this pool (unpickling the result); and only a process can be stopped once started.

Other CPU-heavy request work (a backfill computes, renders and encodes up to 10,000
trigger events: seconds) runs there too, through `run`.

Loaded flows are kept by their text (an LRU): stored revisions are loaded again and
again (every start, webhook call and trigger listing), and never change.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from headrace.flow.errors import FlowError, FlowValidationError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow
from headrace.services.gateway.responses import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")

# A flow within the limits (headrace.flow.limits) loads in well under a second on a
# loaded machine; ten times that is no flow, and its worker is stopped.
LOAD_TIMEOUT_S = 10.0
# Two cores is the machine the gateway is sized for; more workers would only compete.
MAX_WORKERS = 2
CACHE_SIZE = 256  # loaded flow texts kept; a flow is at most 256 KiB of text


def _load(text: str, source: str) -> Flow | list[FlowError]:
    """In a worker: the flow, or its errors (plain values pickle; the exception would not)."""
    try:
        return load_flow(text, source)
    except FlowValidationError as exc:
        return exc.errors


class FlowLoader:
    """`await load(text, source)`: `load_flow` run in a worker process, cached."""

    def __init__(self, workers: int | None = None, timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self._workers = workers or max(1, min(MAX_WORKERS, os.cpu_count() or 1))
        self._timeout_s = timeout_s
        self._pool: ProcessPool | None = None
        self._cache: OrderedDict[str, Flow] = OrderedDict()

    async def start(self) -> None:
        """Start the workers and load a flow in each: their imports take a second."""
        self._ensure_pool()
        warm = "id: warm\nnamespace: headrace\ntasks: [{id: t, type: log, message: hi}]\n"
        await asyncio.gather(
            *(self._run(warm + f"# {i}\n", "warm-up") for i in range(self._workers))
        )

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.stop()  # kills busy workers: nobody waits for their answer any more
            pool.join(timeout=5)

    def _ensure_pool(self) -> ProcessPool:
        if self._pool is None:
            # Spawned, not forked: a fork of this process would copy the event loop's
            # threads and sockets mid-use.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPool(max_workers=self._workers, context=context)
        return self._pool

    async def load(self, text: str, source: str) -> Flow:
        """The flow `text` defines; raises `FlowValidationError` naming `source`."""
        flow = self._cache.get(text)
        if flow is not None:
            self._cache.move_to_end(text)
            return flow
        flow = await self._run(text, source)
        self._cache[text] = flow
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return flow

    async def run(self, function: Callable[..., T], *args: Any, timeout_s: float) -> T:
        """Other CPU-heavy work of a request (a backfill's ticks), in the same workers,
        stopped after `timeout_s`; `function` and its values must pickle."""
        future = self._ensure_pool().schedule(function, args, timeout=timeout_s)
        try:
            return await asyncio.wrap_future(future)
        except FutureTimeout:
            raise ApiError(
                422, f"the request needed more than {timeout_s:g} s of work: ask for less"
            ) from None

    async def _run(self, text: str, source: str) -> Flow:
        future = self._ensure_pool().schedule(_load, (text, source), timeout=self._timeout_s)
        try:
            result = await asyncio.wrap_future(future)
        except FutureTimeout:
            raise FlowValidationError(
                source,
                [
                    FlowError(
                        "",
                        None,
                        None,
                        f"validating the flow took longer than {self._timeout_s:g} s, "
                        "so it was stopped",
                        "make the flow smaller: fewer tasks, values or aliases",
                    )
                ],
            ) from None
        except ProcessExpired as exc:
            log.warning("a flow validation worker died (%s) on %s", exc, source)
            raise FlowValidationError(
                source,
                [FlowError("", None, None, f"the flow could not be validated: {exc}")],
            ) from None
        if isinstance(result, list):
            raise FlowValidationError(source, result)
        return result
