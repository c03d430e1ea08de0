"""Benchmark: webhook ingress, `POST /api/v1/executions/webhook/…` answered 202.

Measures the gateway's side only: each request finds the flow's latest revision, checks
the key, renders the trigger's inputs, validates them and waits for the broker's ack of
its trigger event. Reports requests/s and the p50/p99 latency of those requests, as a
load generator on loopback sees them (aiohttp, `--concurrency` requests in flight).

    python benchmarks/webhooks.py [--requests 5000] [--concurrency 50] [--max-seconds 120]

It starts its own `headrace server local` on a free port (embedded broker and embedded
PostgreSQL unless HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL are set) and stops it.
The executions the requests start run meanwhile (the load shares the CPU with them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import threading
import time

import aiohttp

from headrace.broker import free_port
from headrace.token_file import new_token

TOKEN = new_token()  # the server's token for this run (HEADRACE_TOKEN); webhooks need none

KEY = "bench-webhook-key-0123456789"
FLOW = f"""\
id: hook
namespace: benchmarks
inputs:
  - id: order
    type: INT
tasks:
  - id: log
    type: log
    message: "order {{{{ inputs.order }}}}"
triggers:
  - id: incoming
    type: webhook
    key: {KEY}
    conditions:
      - "{{{{ trigger.body.kind == 'order' }}}}"
    inputs:
      order: "{{{{ trigger.body.order }}}}"
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_up(server: subprocess.Popen[str]) -> None:
    """Every service is ready once `server local` prints its "headrace is up" line."""
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("headrace is up"):
            # Keep reading what it prints: a full pipe would block the server.
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return
    raise SystemExit(f"headrace server local exited with {server.wait()} before it was up")


async def run(requests: int, concurrency: int, max_seconds: float, url: str) -> dict[str, float]:
    api = url + "/api/v1"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.put(
            f"{api}/flows/benchmarks/hook",
            data=FLOW,
            headers={"Content-Type": "application/x-yaml", "Authorization": f"Bearer {TOKEN}"},
        ) as response:
            response.raise_for_status()
        hook = f"{api}/executions/webhook/benchmarks/hook/{KEY}"
        async with session.post(hook, json={"kind": "order", "order": 0}) as response:
            assert response.status == 202, await response.text()  # warm-up, and a check

        latencies: list[float] = []
        failures: dict[int, int] = {}
        counter = iter(range(1, requests + 1))
        started = time.perf_counter()
        deadline = started + max_seconds

        async def client() -> None:
            for order in counter:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                async with session.post(hook, json={"kind": "order", "order": order}) as r:
                    await r.read()
                    if r.status == 202:
                        latencies.append(time.perf_counter() - sent)
                    else:
                        failures[r.status] = failures.get(r.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if not latencies:
        raise SystemExit(f"no request succeeded: {failures}")
    return {
        "requests": len(latencies),
        "failed": sum(failures.values()),
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "headrace", "server", "local", "--port", str(port)],
        env=dict(os.environ, HEADRACE_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_up(server)
        result = asyncio.run(
            run(args.requests, args.concurrency, args.max_seconds, f"http://127.0.0.1:{port}")
        )
    finally:
        server.terminate()
        server.wait(60)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for key, value in result.items():
        print(f"{key:>16}: {value:.2f}" if isinstance(value, float) else f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
