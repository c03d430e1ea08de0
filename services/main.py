"""Run one service in this process: `headrace server <name>`.

Asyncio services get a `stop` event set by SIGINT/SIGTERM; the executor is a Faust
worker, which owns its event loop and signal handling.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

from headrace.config import Settings
from headrace.readiness import mark_ready

ServiceMain = Callable[[Settings, asyncio.Event], Awaitable[None]]


def run_service(
    name: str,
    settings: Settings,
    loglevel: str = "WARNING",
    secrets: Mapping[str, str] | None = None,
) -> None:
    """`secrets`: by name, for a worker (see `headrace.sealed_env`)."""
    # Two task types claiming one name: stop now, naming both (imported here: the flow
    # model is heavy, and every service imports this module).
    from headrace.flow.model import task_type_aliases

    task_type_aliases()
    logging.basicConfig(
        level=loglevel, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"
    )
    if name == "executor":
        from headrace.services.executor.app import run_executor

        run_executor(settings, loglevel=loglevel.lower())
        return
    asyncio.run(_run_async(name, settings, secrets or {}))


async def _run_async(name: str, settings: Settings, secrets: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if name == "gateway":
        from headrace.services.gateway import run_gateway

        await run_gateway(settings, stop, ready=lambda _port: mark_ready())
    elif name == "worker":
        from headrace.services.worker import run_worker

        await run_worker(settings, stop, ready=mark_ready, secrets=secrets)
    elif name == "indexer":
        from headrace.services.indexer import run_indexer

        await run_indexer(settings, stop, ready=mark_ready)
    elif name == "scheduler":
        from headrace.services.scheduler import run_scheduler

        await run_scheduler(settings, stop, ready=mark_ready)
    else:
        raise ValueError(f"unknown service {name}")
