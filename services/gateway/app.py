"""The gateway's aiohttp application and its life cycle (`run_gateway`).

Start-up order: credentials (none at all stops the start), PostgreSQL pool and
migrations, the Kafka producer, the `flows` topic read to its end (webhooks and API
starts take flows and switches from it, `headrace.flow_log`) and what it lacks
published, the LISTEN connection, then the socket; shutdown in reverse. `/healthz`
answers 200 only when PostgreSQL answers, the producer is started and the `flows` topic
was read up to date lately (`FLOWS_STALE_S`).
Every request passes the browser checks (`browser`), then authentication and roles
(`auth`): all routes need credentials but `/healthz`, webhooks (whose key is theirs),
the OpenAPI document (`openapi_api`) and the web UI's page and files (`ui`: they hold no
data; its scripts call the API with the user's credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import asyncpg
from aiohttp import web

from headrace import __version__
from headrace.config import Settings
from headrace.db.executions import ExecutionRepository
from headrace.db.flows import FlowIndex
from headrace.db.logs import LogRepository
from headrace.db.migrate import migrate
from headrace.db.pool import create_pool
from headrace.db.triggers import TriggerStateRepository
from headrace.errors import HeadraceError
from headrace.flow_log import FlowLog, publish_stored
from headrace.flow_schema import flow_json_schema_bytes
from headrace.flow_store import FlowStore
from headrace.kafka import make_producer
from headrace.services.gateway import (
    blueprints_api,
    executions_api,
    files_api,
    flows_api,
    follow,
    kestra_api,
    logs_api,
    me_api,
    namespace_files_api,
    namespaces_api,
    openapi_api,
    plugins_api,
    stats_api,
    triggers_api,
    ui,
    webhooks_api,
)
from headrace.services.gateway.auth import Authenticator, require_credentials
from headrace.services.gateway.bodies import refuse_nul_in_url
from headrace.services.gateway.browser import HostPolicy, browser_checks
from headrace.services.gateway.context import GATEWAY, Gateway, gateway
from headrace.services.gateway.credentials import load_credentials
from headrace.services.gateway.flow_loading import FlowLoader
from headrace.services.gateway.flows_index import index_flows
from headrace.services.gateway.follow import ChangeFeed
from headrace.services.gateway.metrics import metrics, readyz
from headrace.services.gateway.responses import error_middleware, json_response
from headrace.services.gateway.waiter import ExecutionWaiter
from headrace.storage import Storage
from headrace.topics.definitions import FLOWS

log = logging.getLogger(__name__)

# How often the gateway checks that it keeps up with the `flows` topic (a fence round
# trip), and after how long without a check that came back `/healthz` says it does not.
FLOWS_SYNC_S = 30.0
FLOWS_STALE_S = 3 * FLOWS_SYNC_S

API_PREFIX = "/api/v1"
# Request bodies above this are refused with 413. A webhook's body becomes an execution's
# start, as `trigger.body` and often once more in its inputs, beside its headers: twice
# this leaves room in what `triggers` takes (MAX_VALUE_BYTES). A larger start is still
# refused, with 413 too (executions_api.publish). A flow is far smaller.
MAX_BODY_BYTES = 256 * 1024
HEALTH_TIMEOUT_S = 2.0
# In-flight requests (a `wait=true` one may hold for minutes) get this long at shutdown.
SHUTDOWN_TIMEOUT_S = 5.0


async def healthz(request: web.Request) -> web.Response:
    gw = gateway(request)
    problems = []
    try:
        await gw.pool.fetchval("SELECT 1", timeout=HEALTH_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        problems.append(f"postgresql: {exc or type(exc).__name__}")
    if not gw.producer_started:
        problems.append("kafka producer not started")
    synced = gw.flow_log.synced_at
    if synced is None or time.monotonic() - synced > FLOWS_STALE_S:
        # Webhooks and API starts would run flows and switches this old.
        problems.append(f"the {FLOWS.name} topic was not read up to date in {FLOWS_STALE_S:g} s")
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ok"})


async def index(request: web.Request) -> web.Response:
    """The API's root: where things are (a browser at `/` gets the web UI)."""
    return json_response(
        {
            "name": "headrace",
            "version": __version__,
            "api": API_PREFIX,
            "endpoints": [
                f"{API_PREFIX}/flows",
                f"{API_PREFIX}/executions",
                f"{API_PREFIX}/logs/{{executionId}}",
                f"{API_PREFIX}/plugins",
                f"{API_PREFIX}{openapi_api.ROUTE}",
                "/healthz",
                "/metrics",
            ],
        }
    )


# Routes open without credentials: health probes, webhooks (the URL's key is theirs), and
# the API's OpenAPI document (nothing secret in it; tools fetch it without a token).
PUBLIC_ROUTES = (
    frozenset(
        {"/healthz", "/readyz", API_PREFIX + webhooks_api.ROUTE, API_PREFIX + openapi_api.ROUTE}
    )
    | ui.PUBLIC_ROUTES
)
# POST routes that change nothing: a reader may call them.
READ_ONLY_POSTS = frozenset({f"{API_PREFIX}/flows/validate"})


def make_app(
    gw: Gateway,
    authenticator: Authenticator,
    hosts: HostPolicy,
    max_body_bytes: int = MAX_BODY_BYTES,
    metrics_targets: tuple[str, ...] = (),
) -> web.Application:
    """`metrics_targets`: the services whose metrics `GET /api/v1/stats` shows."""
    # error_middleware first: it turns what the inner ones raise into JSON answers.
    middlewares = [
        error_middleware,
        refuse_nul_in_url,
        browser_checks(hosts, exempt=PUBLIC_ROUTES),
        require_credentials(authenticator, PUBLIC_ROUTES, READ_ONLY_POSTS),
    ]
    app = web.Application(middlewares=middlewares, client_max_size=max_body_bytes)
    app[GATEWAY] = gw
    flows_api.add_routes(app, API_PREFIX)
    webhooks_api.add_routes(app, API_PREFIX)  # before the generic /executions routes
    kestra_api.add_routes(app, API_PREFIX)  # after /flows/schema, before /executions/{id}
    executions_api.add_routes(app, API_PREFIX)
    files_api.add_routes(app, API_PREFIX)
    logs_api.add_routes(app, API_PREFIX)
    follow.add_routes(app, API_PREFIX)
    triggers_api.add_routes(app, API_PREFIX)
    plugins_api.add_routes(app, API_PREFIX)
    namespace_files_api.add_routes(app, API_PREFIX)
    namespaces_api.add_routes(app, API_PREFIX)
    me_api.add_routes(app, API_PREFIX)
    stats_api.add_routes(app, API_PREFIX, metrics_targets)  # the web UI's dashboard
    blueprints_api.add_routes(app, API_PREFIX)  # the examples, to copy
    openapi_api.add_routes(app, API_PREFIX)  # its document: headrace/openapi.py
    kestra_api.add_tenant_routes(app, API_PREFIX)  # /api/v1/main/…: last, shadows none
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(API_PREFIX, index)
    ui.add_routes(app)  # `/` and `/ui/...`: the web UI's page and files
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    """The server as it runs. aiohttp's default stays: a handler is not cancelled when its
    client leaves (a half-done write would be worse); long waits use `while_connected`."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)


async def run_gateway(
    settings: Settings, stop: asyncio.Event, ready: Callable[[int], None] | None = None
) -> None:
    authenticator = Authenticator(load_credentials(settings))
    pool = await create_pool(settings.database_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(pool.close)
        await migrate(pool)
        producer = make_producer(settings, "headrace-gateway")
        await producer.start()
        stack.push_async_callback(producer.stop)
        flow_log = FlowLog(settings, "headrace-gateway")
        await flow_log.start()
        stack.push_async_callback(flow_log.stop)
        await publish_stored(FlowIndex(pool), TriggerStateRepository(pool), flow_log)
        executions = ExecutionRepository(pool)
        waiter = ExecutionWaiter(settings.database_url, executions)
        await waiter.start()
        stack.push_async_callback(waiter.close)
        changes = ChangeFeed(settings.database_url)
        flow_loader = FlowLoader()
        stack.callback(flow_loader.close)
        await flow_loader.start()
        # Built once per process, in ~0.25 s of pure Python: before serving, not on the
        # loop while other requests wait (the editor asks for it on every flow page).
        flow_json_schema_bytes()
        gw = Gateway(
            pool=pool,
            producer=producer,
            flows=FlowStore(flow_log),
            executions=executions,
            logs=LogRepository(pool),
            waiter=waiter,
            flow_log=flow_log,
            producer_started=True,
            flow_loader=flow_loader,
            storage=Storage(settings.storage_path()),
            changes=changes,
        )
        app = make_app(
            gw,
            authenticator,
            HostPolicy.from_settings(settings),
            metrics_targets=settings.metrics_targets,
        )
        runner = make_runner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        # Runs before the cleanup (last pushed, first run): live streams end at once
        # instead of holding the server's shutdown up.
        stack.push_async_callback(changes.close)
        site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
        await site.start()
        port = _bound_port(runner, settings.gateway_port)
        log.info("gateway listening on http://%s:%d", settings.gateway_host, port)
        if ready is not None:
            ready(port)
        keeping_up = asyncio.create_task(flow_log.keep_synced(FLOWS_SYNC_S))
        stack.callback(keeping_up.cancel)
        indexing = asyncio.create_task(index_flows(flow_log, FlowIndex(pool), stop))
        stack.callback(indexing.cancel)
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            [stopped, flow_log.following, indexing], return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        gw.producer_started = False  # healthz says 503 while draining
        if not stop.is_set():
            # Flows, switches or the flows table would go stale for good: exit, and be
            # started again, saying why.
            if flow_log.following.done():
                failed, what = flow_log.following, f"stopped following the {FLOWS.name} topic"
            else:
                failed, what = indexing, f"stopped writing the {FLOWS.name} table"
            cause = None if failed.cancelled() else failed.exception()
            raise HeadraceError(what if cause is None else f"{what}: {cause!r}") from cause


def _bound_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return configured
