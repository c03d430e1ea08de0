"""`GET /metrics` and `GET /readyz` of the gateway, and its webhook counter.

`/metrics`: what this process measured (`headrace.metrics`: webhook requests by status,
consumer lag of its `flows` reader, the process's CPU and memory), and, read from the
index at each scrape, `headrace_executions_stuck`: the executions the watchdog found
unable to make progress (docs/operations.md). A reader's credentials are needed, as
for every route but webhooks and the probes: Prometheus sends them with
`authorization` in its scrape config.

`/readyz`: the gateway reaches the broker (a metadata request on its producer's
connections) and PostgreSQL (`SELECT 1` through its pool); 503 saying which does not.
Unlike `/healthz`, it does not look at how fresh the gateway's read of `flows` is.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from headrace.metrics import WEBHOOK_REQUESTS, exposition
from headrace.readiness import CHECK_TIMEOUT_S, Readiness
from headrace.services.gateway.context import Gateway, gateway
from headrace.services.gateway.responses import ApiError, json_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# One `Readiness` per gateway, by its id while it lives (a `Gateway` is not hashable): its
# cache spares the broker and the pool a burst of probes.
_READINESS: dict[int, Readiness] = {}


async def metrics(request: web.Request) -> web.Response:
    registry = CollectorRegistry()
    stuck = Gauge(
        "headrace_executions_stuck",
        "Unended executions the watchdog found unable to make progress (stuck or lost).",
        registry=registry,
    )
    stuck.set(await gateway(request).executions.count_stuck())
    return web.Response(
        body=exposition() + generate_latest(registry),
        headers={"Content-Type": CONTENT_TYPE_LATEST},
    )


def _readiness(gw: Gateway) -> Readiness:
    readiness = _READINESS.get(id(gw))
    if readiness is None:
        # Not `gw` itself: the checks must not keep the gateway alive past its finalizer.
        producer, pool = gw.producer, gw.pool

        async def kafka() -> None:
            await producer.client.fetch_all_metadata()

        async def postgresql() -> None:
            await pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_S)

        readiness = _READINESS[id(gw)] = Readiness({"kafka": kafka, "postgresql": postgresql})
        weakref.finalize(gw, _READINESS.pop, id(gw), None)
    return readiness


async def readyz(request: web.Request) -> web.Response:
    report = await _readiness(gateway(request)).report()
    if report.ready:
        return json_response(report.body())
    # A public route: what failed, not how (an error can name a host or a user); the
    # gateway's log has the details.
    log.warning("not ready: %s", report.problems)
    body = {"status": "unavailable", "problems": dict.fromkeys(report.problems, "unavailable")}
    return json_response(body, status=503)


def count_webhooks(handler: Handler) -> Handler:
    """`handler`, counting its answers by status in `headrace_webhook_requests_total`
    (an error it raises counts with the status the error middleware will give it)."""

    async def counted(request: web.Request) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except (ApiError, web.HTTPException) as exc:
            status = exc.status
            raise
        finally:
            WEBHOOK_REQUESTS.labels(str(status)).inc()

    return counted
