"""The small HTTP server of every service but the gateway: metrics and health probes.

Served on `HEADRACE_METRICS_PORT` (unset: no server) and `HEADRACE_METRICS_HOST`
(default 127.0.0.1; `0.0.0.0` in a container, whose port stays on the private network):

- `GET /metrics`: Prometheus text (`headrace.metrics`);
- `GET /healthz`: 200 while the process serves HTTP at all (a liveness probe);
- `GET /readyz`: 200 when the service reaches the broker, PostgreSQL where it uses it,
  and has joined its consumer group; 503 with `{"status": "unavailable", "problems":
  {check: reason}}` otherwise (`headrace.readiness`).

No credentials are asked: the server shows counts and durations labelled by task type,
state, topic and group, never a flow's data, and it changes nothing. The gateway serves
the same three on its API port (`/metrics` there asks for a reader's credentials, since
it also reads the index).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from headrace.config import Settings
from headrace.metrics import exposition, mark_service
from headrace.readiness import BrokerCheck, Check, DatabaseCheck, Readiness, flag_check

log = logging.getLogger(__name__)

# The services that keep state in PostgreSQL: their readiness checks it too. (The
# executor and the workers never connect to it.)
USES_DATABASE = frozenset({"gateway", "scheduler", "indexer"})

READINESS = web.AppKey("readiness", Readiness)


def json_body(body: dict, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return json_body({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    report = await request.app[READINESS].report()
    return json_body(report.body(), status=200 if report.ready else 503)


def make_app(readiness: Readiness) -> web.Application:
    app = web.Application()
    app[READINESS] = readiness
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@contextlib.asynccontextmanager
async def serving(
    service: str, settings: Settings, joined: Callable[[], bool]
) -> AsyncIterator[int | None]:
    """Serve the probes of `service` while the block runs, when `settings.metrics_port`
    is set: yields the bound port (None when there is no server). `joined()` says
    whether the service has joined its consumer group."""
    mark_service(service)
    if settings.metrics_port is None:
        yield None
        return
    broker = BrokerCheck(settings.kafka_bootstrap, f"headrace-{service}-readiness")
    database = DatabaseCheck(settings.database_url) if service in USES_DATABASE else None
    checks: dict[str, Check] = {"kafka": broker}
    if database is not None:
        checks["postgresql"] = database
    checks["consumer group"] = flag_check(joined, "not joined yet")
    runner = web.AppRunner(make_app(Readiness(checks)), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
        await site.start()
        port = _bound_port(runner, settings.metrics_port)
        log.info("%s: metrics and probes on http://%s:%d", service, settings.metrics_host, port)
        yield port
    finally:
        await runner.cleanup()
        await broker.close()
        if database is not None:
            await database.close()


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
