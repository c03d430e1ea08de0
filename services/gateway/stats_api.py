"""`GET /api/v1/stats`: the web UI's dashboard in one answer.

Executions per state over the last `hours` in buckets, the flows that failed most in
that window, what runs and waits now (`headrace.db.stats`, from the index), and the
services' activity from the metrics they already expose: the gateway scrapes the
`/metrics` of each `HEADRACE_METRICS_TARGETS` URL at each call, all at once, each within
`SCRAPE_TIMEOUT_S`. A target that does not answer is listed `up: false` with its error;
the answer never fails for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from headrace.db.stats import MAX_HOURS, Window, execution_stats
from headrace.services.gateway.bodies import query_int
from headrace.services.gateway.context import gateway
from headrace.services.gateway.responses import json_response

ROUTE = "/stats"
DEFAULT_HOURS = 24
SCRAPE_TIMEOUT_S = 2.0
# A service's exposition is tens of KiB; more is no headrace service.
MAX_METRICS_BYTES = 4 * 1024 * 1024
METRICS_TARGETS = web.AppKey("metrics_targets", tuple)

WORKER = "worker"  # the service that runs tasks: its slots and attempts are shown
INFO = "headrace_info"
SLOTS = "headrace_worker_slots"
SLOTS_IN_USE = "headrace_worker_slots_in_use"
ATTEMPTS = "headrace_task_attempt_duration_seconds"
# Only these lines are parsed: the rest of an exposition (histograms of every stage,
# lags per partition) would cost the event loop for nothing.
_WANTED = (INFO, SLOTS, ATTEMPTS + "_count")


async def stats(request: web.Request) -> web.Response:
    hours = query_int(request, "hours", DEFAULT_HOURS, 1, MAX_HOURS)
    window = Window.last(hours)
    targets: tuple[str, ...] = request.app[METRICS_TARGETS]
    counted, services = await asyncio.gather(
        execution_stats(gateway(request).pool, window), scrape_all(targets)
    )
    return json_response(
        {
            "from": window.start,
            "to": window.end,
            "bucketSeconds": window.bucket,
            **counted,
            "workers": {"configured": bool(targets), "services": services},
        }
    )


async def scrape_all(targets: tuple[str, ...]) -> list[dict[str, Any]]:
    if not targets:
        return []
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(scrape(session, url) for url in targets)))


def metrics_url(target: str) -> str:
    """A target's metrics: its base URL + `/metrics` (given whole, kept)."""
    target = target.rstrip("/")
    return target if target.endswith("/metrics") else target + "/metrics"


async def scrape(session: aiohttp.ClientSession, target: str) -> dict[str, Any]:
    """One target's service, version and worker figures; `up: false` with the error when
    it cannot be read."""
    entry: dict[str, Any] = {
        "url": target,
        "service": None,
        "up": False,
        "error": None,
        "version": None,
        "slots": None,
        "slotsInUse": None,
        "attemptsDone": None,
    }
    try:
        # No redirects: a target answers for itself, it does not send the gateway elsewhere.
        async with session.get(metrics_url(target), allow_redirects=False) as response:
            if response.status != 200:
                entry["error"] = f"HTTP {response.status} from {metrics_url(target)}"
                return entry
            # read(n) gives what is buffered so far: gather chunks up to the cap.
            body = b""
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_METRICS_BYTES:
                    break
        if len(body) > MAX_METRICS_BYTES:
            entry["error"] = f"the metrics are over {MAX_METRICS_BYTES} bytes"
            return entry
        entry.update(read_metrics(body.decode("utf-8", "replace")))
    except TimeoutError:
        entry["error"] = f"no answer within {SCRAPE_TIMEOUT_S:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        entry["error"] = str(exc) or type(exc).__name__
    else:
        entry["up"] = True
    return entry


def read_metrics(text: str) -> dict[str, Any]:
    """The figures the dashboard shows, from a Prometheus text exposition; `ValueError`
    when it is no such text."""
    lines = [line for line in text.splitlines() if line.startswith(_WANTED)]
    found: dict[str, Any] = {}
    attempts = None
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name == INFO and sample.value == 1:
                found["service"] = sample.labels.get("service")
                found["version"] = sample.labels.get("version")
            elif sample.name == SLOTS:
                found["slots"] = int(sample.value)
            elif sample.name == SLOTS_IN_USE:
                found["slotsInUse"] = int(sample.value)
            elif sample.name == ATTEMPTS + "_count":
                attempts = (attempts or 0) + int(sample.value)
    if "service" not in found:
        raise ValueError(f"no {INFO} in its metrics: is it a headrace service's?")
    if found.get("service") != WORKER:
        # Every process exports the worker's gauges (at 0): only a worker's mean anything.
        return {key: found[key] for key in ("service", "version") if key in found}
    found["attemptsDone"] = attempts or 0
    return found


def add_routes(app: web.Application, prefix: str, metrics_targets: tuple[str, ...]) -> None:
    app[METRICS_TARGETS] = metrics_targets
    app.router.add_get(prefix + ROUTE, stats)
