"""Run one service in this process: `headrace server <name>`.

Asyncio services get a `stop` event set by SIGINT/SIGTERM; the executor is a Faust
worker, which owns its event loop and signal handling. Every service but the gateway
serves its metrics and probes on `HEADRACE_METRICS_PORT` when it is set
(`headrace.service_http`; the executor's is a Faust service of its app); the gateway
serves them on its API port.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Mapping

from headrace import log_format as log_formats
from headrace.config import Settings
from headrace.metrics import mark_service
from headrace.readiness import mark_ready
from headrace.service_http import serving

ServiceMain = Callable[[Settings, asyncio.Event], Awaitable[None]]


def run_service(
    name: str,
    settings: Settings,
    loglevel: str = "WARNING",
    secrets: Mapping[str, str] | None = None,
    log_format: str = "text",
) -> None:
    """`secrets`: by name, for a worker (see `headrace.sealed_env`). `log_format`: `text`
    or `json` (headrace.log_format)."""
    # Two task types claiming one name: stop now, naming both (imported here: the flow
    # model is heavy, and every service imports this module).
    from headrace.flow.model import task_type_aliases

    task_type_aliases()
    log_formats.configure(name, loglevel, log_format)
    if name == "executor":
        from headrace.services.executor.app import run_executor

        run_executor(settings, loglevel=loglevel.lower(), log_format=log_format)
        return
    asyncio.run(_run_async(name, settings, secrets or {}))


async def _run_async(name: str, settings: Settings, secrets: Mapping[str, str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    joined = False

    def ready() -> None:
        nonlocal joined
        joined = True
        mark_ready()

    if name == "gateway":  # its probes and metrics are on its API port
        from headrace.services.gateway import run_gateway

        mark_service(name)
        await run_gateway(settings, stop, ready=lambda _port: ready())
        return
    async with serving(name, settings, lambda: joined):
        if name == "worker":
            from headrace.services.worker import run_worker

            await run_worker(settings, stop, ready=ready, secrets=secrets)
        elif name == "indexer":
            from headrace.services.indexer import run_indexer

            await run_indexer(settings, stop, ready=ready)
        elif name == "scheduler":
            from headrace.services.scheduler import run_scheduler

            await run_scheduler(settings, stop, ready=ready)
        else:
            raise ValueError(f"unknown service {name}")
