"""Benchmark: N executions of a three-task flow of `log` tasks through `headrace server local`.

Reports executions/s (first start request to last execution end) and the median and p95
of the gap between one task's end and the next task's start (the orchestration overhead
per hop: result -> executor -> request -> worker), taken from the task runs' attempt
times as indexed in PostgreSQL.

    python benchmarks/executions.py [--executions 1000] [--concurrency 100] [--rate 0]

By default every execution is started at once (a burst: throughput, and hop latency
including queueing). `--rate 20` starts 20 executions per second instead, far below
capacity, so the hop latency is the orchestration overhead alone.

It starts its own `headrace server local` on a free port (embedded broker and embedded
PostgreSQL unless HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL are set) and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime

import aiohttp

from headrace.token_file import new_token

TOKEN = new_token()  # the server's token for this run (HEADRACE_TOKEN)
FLOW = """\
id: bench
namespace: benchmarks
tasks:
  - id: first
    type: log
    message: "first {{ execution.id }}"
  - id: second
    type: log
    message: "second"
  - id: third
    type: log
    message: "third"
"""
TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_up(server: subprocess.Popen[str]) -> None:
    """Every service is ready once `server local` prints its "headrace is up" line."""
    assert server.stdout is not None
    for line in server.stdout:
        if line.startswith("headrace is up"):
            return
    raise SystemExit(f"headrace server local exited with {server.wait()} before it was up")


async def put_flow(session: aiohttp.ClientSession, api: str, flow_id: str, source: str) -> None:
    """Create or update flow `flow_id` of namespace `benchmarks` (`session` has the token)."""
    async with session.put(
        f"{api}/flows/benchmarks/{flow_id}",
        data=source,
        headers={"Content-Type": "application/x-yaml"},
    ) as response:
        response.raise_for_status()


async def run(
    executions: int,
    concurrency: int,
    rate: float,
    url: str,
    flow: str = FLOW,
    flow_id: str = "bench",
    quiet: bool = False,
) -> dict[str, float]:
    """Start `executions` of `flow` (namespace `benchmarks`), wait for all to end, and
    measure them from their indexed task runs."""
    api = url + "/api/v1"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        await put_flow(session, api, flow_id, flow)

        semaphore = asyncio.Semaphore(concurrency)
        ids: list[str] = []

        async def start() -> None:
            async with (
                semaphore,
                session.post(f"{api}/executions/benchmarks/{flow_id}", json={}) as r,
            ):
                r.raise_for_status()
                ids.append((await r.json())["id"])

        started = time.time()
        if rate > 0:
            pending = []
            for _ in range(executions):
                pending.append(asyncio.ensure_future(start()))
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*pending)
        else:
            await asyncio.gather(*(start() for _ in range(executions)))
        submitted = time.time()
        if not quiet:
            print(f"submitted {executions} executions in {submitted - started:.2f}s", flush=True)

        deadline = time.monotonic() + 600
        while True:
            async with session.get(
                f"{api}/executions",
                params={"flowId": flow_id, "namespace": "benchmarks", "size": 1},
            ) as r:
                total = (await r.json())["total"]
            done = 0
            for state in TERMINAL:
                async with session.get(
                    f"{api}/executions",
                    params={
                        "flowId": flow_id,
                        "namespace": "benchmarks",
                        "state": state,
                        "size": 1,
                    },
                ) as r:
                    done += (await r.json())["total"]
            if not quiet:
                print(f"\r{done}/{executions} executions ended", end="", flush=True)
            if done >= executions and total >= executions:
                break
            if time.monotonic() > deadline:
                raise SystemExit("executions did not end within 600 s")
            await asyncio.sleep(0.5)
        if not quiet:
            print()

        gaps: list[float] = []
        ends: list[datetime] = []
        states: dict[str, int] = {}
        task_runs = 0
        for execution_id in ids:
            async with session.get(f"{api}/executions/{execution_id}") as r:
                execution = await r.json()
            states[execution["state"]["current"]] = states.get(execution["state"]["current"], 0) + 1
            runs = execution["taskRunList"]
            task_runs += len(runs)
            for before, after in itertools.pairwise(runs):
                end = datetime.fromisoformat(before["attempts"][-1]["state"]["endDate"])
                begin = datetime.fromisoformat(after["attempts"][0]["state"]["startDate"])
                gaps.append((begin - end).total_seconds() * 1000)
            ends.append(datetime.fromisoformat(runs[-1]["attempts"][-1]["state"]["endDate"]))
        elapsed = max(ends).timestamp() - started
        return {
            "executions": executions,
            "success": states.get("SUCCESS", 0),
            "elapsed_s": elapsed,
            "executions_per_s": executions / elapsed,
            "task_runs_per_s": task_runs / elapsed,
            "hop_median_ms": statistics.median(gaps),
            "hop_p95_ms": percentile(gaps, 0.95),
            "hop_p99_ms": percentile(gaps, 0.99),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rate", type=float, default=0, help="starts per second; 0 = all at once")
    args = parser.parse_args()
    port = free_port()
    env = dict(os.environ, HEADRACE_TOKEN=TOKEN)
    server = subprocess.Popen(
        [sys.executable, "-m", "headrace", "server", "local", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        wait_up(server)
        result = asyncio.run(run(args.executions, args.concurrency, args.rate, url))
    finally:
        server.terminate()
        server.wait(60)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    for key, value in result.items():
        print(f"{key:>18}: {value:.2f}" if isinstance(value, float) else f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
