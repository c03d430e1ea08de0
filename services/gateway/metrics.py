"""`GET /metrics`: Prometheus metrics, read from the index at each scrape.

So far `headrace_executions_stuck`: the executions the watchdog found unable to make
progress (docs/operations.md). A reader's credentials are needed, as for every route but
webhooks and /healthz: Prometheus sends them with `authorization` in its scrape config.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from headrace.services.gateway.context import gateway


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry()
    stuck = Gauge(
        "headrace_executions_stuck",
        "Unended executions the watchdog found unable to make progress (stuck or lost).",
        registry=registry,
    )
    stuck.set(await gateway(request).executions.count_stuck())
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
