"""The engine's benchmark table: one command, its own stack, one table.

    python benchmarks/run.py            # the full workloads (several minutes)
    python benchmarks/run.py --quick    # smaller workloads, same measurements (~2 min)
    python benchmarks/run.py --record   # also append the results to benchmarks/results.jsonl
    python benchmarks/run.py --executors 2   # two executor processes share the partitions

It starts `headrace server local` (embedded broker and PostgreSQL unless
HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL are set) and measures, in this order:

- start-up: from spawning `headrace server local` to its "headrace is up" line (every
  service ready);
- idle: CPU of the whole process tree (broker, PostgreSQL, services) while nothing runs;
- W3: the hop (a task's end to the next task's start, worker clocks) of a 10-task chain of
  `log` tasks, executions started 5 per second (light load);
- W1: a burst of executions of 3 `log` tasks started through the API, until all ended and
  queryable: task runs/s; and what one execution costs, which noise moves far less: CPU of
  the whole process tree per task run, and records written per execution on `executions`,
  on the state changelog and on all of the engine's topics;
- W2: one execution of a `flow.foreach` over 1,000 items (all at once), and one of a
  `flow.parallel` of 1,000 tasks followed by a join task: task runs/s (the execution's
  start to its end), and the largest record written on `executions` and on the state
  changelog meanwhile (neither should grow with the number of task runs);
- W5: webhook ingress, requests at concurrency 50: accepted requests/s and p99 latency;
- W4 (only with `--w4 N`): N executions alive at once, each paused with a delay, then
  all finish: the peak memory (RSS) of each service while they wait, and the executor's
  memory per waiting execution;
- bare: a plain aiokafka consume -> produce loop on the same broker, measured in the same
  run: its hop (one record at a time, round trip through the loop) and its throughput.
  The physical limit of this machine and broker: the engine's figures are given as ratios
  to it.

Each figure is also given as a ratio to the last run recorded in benchmarks/results.jsonl
with the same mode (quick or full). Ratios measured in one run compare code; absolute
numbers drift with the machine's day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from executions import TERMINAL, TOKEN, free_port, percentile, put_flow, run

from headrace.topics.definitions import ALL_TOPICS, EXECUTION_STATE_CHANGELOG, EXECUTIONS

RESULTS = Path(__file__).with_name("results.jsonl")
SERVICE_NAMES = ("gateway", "scheduler", "executor", "worker", "indexer")
CHAIN_TASKS = 10
CHAIN = "id: chain\nnamespace: benchmarks\ntasks:\n" + "".join(
    f"  - {{id: t{i}, type: log, message: 'step {i}'}}\n" for i in range(CHAIN_TASKS)
)
WIDE_TASKS = 1_000
FOREACH = (
    "id: foreach\nnamespace: benchmarks\ntasks:\n"
    "  - id: each\n    type: flow.foreach\n    concurrencyLimit: 0\n"
    f"    values: {list(range(WIDE_TASKS))}\n"
    "    tasks:\n      - {id: item, type: log, message: '{{ taskrun.value }}'}\n"
)
PARALLEL = (
    "id: parallel\nnamespace: benchmarks\ntasks:\n"
    "  - id: fan-out\n    type: flow.parallel\n    tasks:\n"
    + "".join(f"      - {{id: p{i}, type: log, message: '{i}'}}\n" for i in range(WIDE_TASKS))
    + "  - {id: join, type: log, message: joined}\n"
)
WEBHOOK_KEY = "benchmark-" + uuid.uuid4().hex
WEBHOOK = (
    "id: hook\nnamespace: benchmarks\ntasks:\n  - {id: t, type: log, message: hi}\n"
    f"triggers:\n  - {{id: in, type: webhook, key: {WEBHOOK_KEY}}}\n"
)
WEBHOOK_CONCURRENCY = 50
SIZES = {  # mode -> workload sizes
    "quick": {
        "idle_s": 15,
        "chain_executions": 10,
        "burst_executions": 1_000,
        "webhook_requests": 2_000,
        "bare": 20_000,
    },
    "full": {
        "idle_s": 60,
        "chain_executions": 40,
        "burst_executions": 10_000,
        "webhook_requests": 10_000,
        "bare": 100_000,
    },
}
# Which way is better for each figure (for the ratio's reading) and its unit.
FIGURES = {
    "startup_s": ("lower", "s"),
    "idle_cpu_pct": ("lower", "% of a core"),
    "w3_hop_median_ms": ("lower", "ms"),
    "w3_hop_p99_ms": ("lower", "ms"),
    "w1_task_runs_per_s": ("higher", "/s"),
    "w1_cpu_ms_per_task_run": ("lower", "ms"),
    "w1_records_per_execution": ("lower", ""),
    "w1_executions_records_per_execution": ("lower", ""),
    "w1_state_records_per_execution": ("lower", ""),
    "w2_foreach_task_runs_per_s": ("higher", "/s"),
    "w2_parallel_task_runs_per_s": ("higher", "/s"),
    "w2_largest_executions_record_kb": ("lower", "KiB"),
    "w2_largest_state_record_kb": ("lower", "KiB"),
    "w5_webhooks_per_s": ("higher", "/s"),
    "w5_p99_ms": ("lower", "ms"),
    "w4_seconds": ("lower", "s"),
    "w4_most_paused_at_once": ("higher", ""),
    "w4_executor_peak_rss_mib": ("lower", "MiB"),
    "w4_max_service_peak_rss_mib": ("lower", "MiB"),
    "w4_executor_kib_per_execution": ("lower", "KiB"),
    "bare_hop_median_ms": ("lower", "ms"),
    "bare_hop_p99_ms": ("lower", "ms"),
    "bare_records_per_s": ("higher", "/s"),
}


def start_server(executors: int = 1) -> tuple[subprocess.Popen[str], str, str, float]:
    """`headrace server local` up: the process, its URL, its broker and the start-up time."""
    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "headrace", "server", "local", "--port", str(port)),
            # Only when asked: older commits, measured for a comparison, lack the option.
            *(("--executors", str(executors)) if executors != 1 else ()),
        ],
        env=dict(os.environ, HEADRACE_TOKEN=TOKEN),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    bootstrap = os.environ.get("HEADRACE_KAFKA_BOOTSTRAP", "")
    for line in server.stdout:
        if found := re.search(r"embedded broker at (\S+)", line):
            bootstrap = found.group(1)
        if line.startswith("headrace is up"):
            return server, f"http://127.0.0.1:{port}", bootstrap, time.monotonic() - started
    raise SystemExit(f"headrace server local exited with {server.wait()} before it was up")


def tree_cpu_seconds(root: psutil.Process) -> float:
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def idle_cpu_percent(server: subprocess.Popen[str], seconds: float) -> float:
    root = psutil.Process(server.pid)
    time.sleep(5)  # let start-up work (topic metadata, first polls) settle
    before, started = tree_cpu_seconds(root), time.monotonic()
    time.sleep(seconds)
    return 100 * (tree_cpu_seconds(root) - before) / (time.monotonic() - started)


async def bare_loop(bootstrap: str, records: int) -> dict[str, float]:
    """A consume -> produce loop with aiokafka on the same broker: the hop of one record
    at a time through it, then the throughput of `records` through it."""
    topic_in, topic_out = f"bench-in-{uuid.uuid4().hex[:8]}", f"bench-out-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (topic_in, topic_out)])
    finally:
        await admin.close()
    # The same fetch wait as the services use on the embedded broker.
    wait_ms = 5
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    relay_in = AIOKafkaConsumer(topic_in, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms)
    sink = AIOKafkaConsumer(topic_out, bootstrap_servers=bootstrap, fetch_max_wait_ms=wait_ms)
    for client in (producer, relay_in, sink):
        await client.start()
    stop = asyncio.Event()

    async def relay() -> None:
        while not stop.is_set():
            batches = await relay_in.getmany(timeout_ms=100, max_records=5_000)
            for batch in batches.values():
                for record in batch:
                    await producer.send(topic_out, record.value)

    relaying = asyncio.create_task(relay())
    try:
        hops = []
        for i in range(520):
            sent = time.perf_counter()
            await producer.send_and_wait(topic_in, str(i).encode())
            while not await sink.getmany(timeout_ms=1_000):
                pass
            if i >= 20:  # after the warm-up
                hops.append((time.perf_counter() - sent) * 1000)
        started = time.perf_counter()
        for _ in range(records):
            await producer.send(topic_in, b"x" * 100)
        seen = 0
        while seen < records:
            batches = await sink.getmany(timeout_ms=1_000, max_records=10_000)
            seen += sum(len(batch) for batch in batches.values())
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await relaying
        for client in (relay_in, sink, producer):
            await client.stop()
    return {
        "bare_hop_median_ms": statistics.median(hops),
        "bare_hop_p99_ms": percentile(hops, 0.99),
        "bare_records_per_s": records / elapsed,
    }


async def record_counts(bootstrap: str) -> dict[str, int]:
    """Records on each of the engine's topics, read from their beginning until none came
    for a second (the embedded broker's end offsets are not reliable enough to count)."""
    names = [spec.name for spec in ALL_TOPICS]
    reader = AIOKafkaConsumer(*names, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    counts = dict.fromkeys(names, 0)
    try:
        while batches := await reader.getmany(timeout_ms=1_000, max_records=50_000):
            for partition, records in batches.items():
                counts[partition.topic] += len(records)
    finally:
        await reader.stop()
    return counts


def w4_flow(delay_s: int) -> str:
    # The pause alone: the end phase measures the executor resuming, not a worker's task.
    return (
        "id: waiting\nnamespace: benchmarks\ntasks:\n"
        f"  - {{id: wait, type: flow.pause, delay: PT{delay_s}S}}\n"
    )


def service_rss_mib(server: subprocess.Popen[str]) -> dict[str, float]:
    """Resident memory of each `headrace server <service>` process under `server`."""
    rss: dict[str, float] = {}
    for process in psutil.Process(server.pid).children(recursive=True):
        try:
            command = process.cmdline()
            if "server" in command and command[-1] in SERVICE_NAMES:
                name = command[-1]
                rss[name] = rss.get(name, 0.0) + process.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return rss


async def alive_at_once(url: str, server: subprocess.Popen[str], count: int) -> dict[str, float]:
    """W4: `count` executions paused at once, then all ended; peak RSS while they wait."""
    delay_s = max(60, count // 400)  # longer than it takes to start them all (~500-800/s)
    api = url + "/api/v1"
    before = service_rss_mib(server)
    peak = dict(before)
    started = time.monotonic()

    def sample_memory() -> None:
        for name, mib in service_rss_mib(server).items():
            peak[name] = max(peak.get(name, 0.0), mib)

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        await put_flow(session, api, "waiting", w4_flow(delay_s))
        to_start = iter(range(count))
        sent = 0

        async def starter() -> None:  # 100 of them: a million tasks at once would not fit
            nonlocal sent
            for _ in to_start:
                async with session.post(f"{api}/executions/benchmarks/waiting") as r:
                    r.raise_for_status()
                sent += 1

        starters = asyncio.gather(*(starter() for _ in range(100)))
        while not starters.done():
            sample_memory()
            print(f"\r{sent}/{count} started", end="", flush=True)
            await asyncio.wait([starters], timeout=2)
        await starters
        print(f"\r{count} started in {time.monotonic() - started:.0f} s", flush=True)

        async def counted(state: str) -> int:
            params = {"flowId": "waiting", "namespace": "benchmarks", "state": state, "size": 1}
            async with session.get(f"{api}/executions", params=params) as r:
                return (await r.json())["total"]

        # Alive at once: every execution seen paused by the indexer at one moment.
        most_paused = 0
        deadline = time.monotonic() + delay_s + count / 50
        while (ended := await counted("SUCCESS")) < count:
            sample_memory()
            paused = await counted("PAUSED")
            most_paused = max(most_paused, paused)
            print(f"\r{paused} paused, {ended}/{count} ended", end="", flush=True)
            if time.monotonic() > deadline:
                raise SystemExit("W4: the executions did not end in time")
            await asyncio.sleep(2)
        print()
    return {
        "w4_seconds": time.monotonic() - started,
        "w4_most_paused_at_once": most_paused,
        "w4_executor_peak_rss_mib": peak.get("executor", 0.0),
        "w4_max_service_peak_rss_mib": max(peak.values()),
        "w4_executor_kib_per_execution": 1024
        * (peak.get("executor", 0.0) - before.get("executor", 0.0))
        / count,
    }


async def wide_execution(
    url: str, bootstrap: str, flow: str, flow_id: str
) -> tuple[float, dict[str, int]]:
    """One execution of `flow`: its task runs/s (first task start to last task end), and
    the largest record written on `executions` and on the state changelog meanwhile."""
    watcher = AIOKafkaConsumer(
        EXECUTIONS.name,
        EXECUTION_STATE_CHANGELOG.name,
        bootstrap_servers=bootstrap,
        fetch_max_wait_ms=5,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await watcher.start()
    await watcher.seek_to_end()
    largest = {EXECUTIONS.name: 0, EXECUTION_STATE_CHANGELOG.name: 0}
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            for partition, records in (await watcher.getmany(timeout_ms=200)).items():
                sizes = [len(r.value or b"") for r in records]
                largest[partition.topic] = max([largest[partition.topic], *sizes])

    watching = asyncio.create_task(watch())
    api = url + "/api/v1"
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            await put_flow(session, api, flow_id, flow)
            async with session.post(f"{api}/executions/benchmarks/{flow_id}", json={}) as r:
                r.raise_for_status()
                execution_id = (await r.json())["id"]
            deadline = time.monotonic() + 600
            while True:
                async with session.get(f"{api}/executions/{execution_id}") as r:
                    # 404 until the indexer wrote its first row
                    execution = await r.json() if r.status == 200 else {}
                if execution.get("state", {}).get("current") in TERMINAL:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{flow_id}: the execution did not end within 600 s")
                await asyncio.sleep(0.5)
    finally:
        await asyncio.sleep(1)  # the last records on their way
        done.set()
        await watching
        await watcher.stop()
    # The execution's own start and end (the executor's clock): the workers may end the
    # tasks long before the executor has taken in their results.
    state = execution["state"]
    elapsed = (
        datetime.fromisoformat(state["endDate"]) - datetime.fromisoformat(state["startDate"])
    ).total_seconds()
    return len(execution["taskRunList"]) / elapsed, largest


async def webhook_ingress(url: str, requests: int) -> dict[str, float]:
    """`requests` webhook calls at WEBHOOK_CONCURRENCY at once: accepted/s and p99."""
    api = url + "/api/v1"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        await put_flow(session, api, "hook", WEBHOOK)
    latencies: list[float] = []
    accepted = 0
    hook = f"{api}/executions/webhook/benchmarks/hook/{WEBHOOK_KEY}"
    connector = aiohttp.TCPConnector(limit=WEBHOOK_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:  # webhooks take no token
        semaphore = asyncio.Semaphore(WEBHOOK_CONCURRENCY)

        async def call() -> None:
            nonlocal accepted
            async with semaphore:
                started = time.perf_counter()
                async with session.post(hook, json={"n": 1}) as r:
                    await r.read()
                    accepted += r.status < 300
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(call() for _ in range(requests)))
        elapsed = time.perf_counter() - started
    if accepted < requests:
        print(f"W5: {requests - accepted} of {requests} webhook calls were refused", flush=True)
    return {"w5_webhooks_per_s": accepted / elapsed, "w5_p99_ms": percentile(latencies, 0.99)}


def previous(mode: str) -> dict[str, float]:
    if not RESULTS.exists():
        return {}
    runs = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    same = [r for r in runs if r.get("mode") == mode]
    return same[-1]["figures"] if same else {}


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.3g}x" if base else "-"


def print_table(figures: dict[str, float], before: dict[str, float]) -> None:
    to_bare = {
        "w3_hop_median_ms": figures["bare_hop_median_ms"],
        "w3_hop_p99_ms": figures.get("bare_hop_p99_ms"),
        "w1_task_runs_per_s": figures["bare_records_per_s"],
    }
    print(f"{'figure':<36} {'value':>12}  {'unit':<12} {'vs last':>8}  {'vs bare':>8}  better")
    for name, (better, unit) in FIGURES.items():
        value = figures.get(name)
        if value is None:
            continue  # not measured by this version of the benchmark
        print(
            f"{name:<36} {value:>12.2f}  {unit:<12} {ratio(value, before.get(name)):>8}"
            f"  {ratio(value, to_bare.get(name)):>8}  {better}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (~2 min)")
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS.name}")
    parser.add_argument(
        "--executors", type=int, default=1, help="executor processes (server local --executors)"
    )
    parser.add_argument(
        "--w4",
        type=int,
        default=0,
        metavar="N",
        help="also run W4 with N executions alive at once (issue 10 asks 1,000,000)",
    )
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    figures: dict[str, float] = {}
    print(
        f"starting headrace server local ({mode} mode, {args.executors} executor(s))…", flush=True
    )
    server, url, bootstrap, figures["startup_s"] = start_server(args.executors)
    try:
        print(f"idle for {size['idle_s']} s…", flush=True)
        figures["idle_cpu_pct"] = idle_cpu_percent(server, size["idle_s"])
        print(f"W3: {size['chain_executions']} chains of {CHAIN_TASKS} tasks…", flush=True)
        chain = asyncio.run(
            run(size["chain_executions"], 1, 5, url, flow=CHAIN, flow_id="chain", quiet=True)
        )
        figures["w3_hop_median_ms"] = chain["hop_median_ms"]
        figures["w3_hop_p99_ms"] = chain["hop_p99_ms"]
        print(f"W1: a burst of {size['burst_executions']} executions…", flush=True)
        before = asyncio.run(record_counts(bootstrap))
        cpu_before = tree_cpu_seconds(psutil.Process(server.pid))
        burst = asyncio.run(run(size["burst_executions"], 100, 0, url, quiet=True))
        cpu = tree_cpu_seconds(psutil.Process(server.pid)) - cpu_before
        after = asyncio.run(record_counts(bootstrap))
        figures["w1_task_runs_per_s"] = burst["task_runs_per_s"]
        executions = size["burst_executions"]
        figures["w1_cpu_ms_per_task_run"] = 1000 * cpu / (3 * executions)
        figures["w1_records_per_execution"] = (
            sum(after.values()) - sum(before.values())
        ) / executions
        for figure, topic in (
            ("w1_executions_records_per_execution", EXECUTIONS.name),
            ("w1_state_records_per_execution", EXECUTION_STATE_CHANGELOG.name),
        ):
            figures[figure] = (after[topic] - before[topic]) / executions
        print(f"W2: for-each and parallel over {WIDE_TASKS} tasks…", flush=True)
        foreach_rate, foreach_largest = asyncio.run(
            wide_execution(url, bootstrap, FOREACH, "foreach")
        )
        parallel_rate, parallel_largest = asyncio.run(
            wide_execution(url, bootstrap, PARALLEL, "parallel")
        )
        figures["w2_foreach_task_runs_per_s"] = foreach_rate
        figures["w2_parallel_task_runs_per_s"] = parallel_rate
        for figure, topic in (
            ("w2_largest_executions_record_kb", EXECUTIONS.name),
            ("w2_largest_state_record_kb", EXECUTION_STATE_CHANGELOG.name),
        ):
            figures[figure] = max(foreach_largest[topic], parallel_largest[topic]) / 1024
        print(f"bare aiokafka loop: {size['bare']} records…", flush=True)
        figures.update(asyncio.run(bare_loop(bootstrap, size["bare"])))
        # Last: the executions it starts run on after it.
        print(f"W5: {size['webhook_requests']} webhook calls…", flush=True)
        figures.update(asyncio.run(webhook_ingress(url, size["webhook_requests"])))
        if args.w4:
            print(f"W4: {args.w4} executions alive at once…", flush=True)
            figures.update(asyncio.run(alive_at_once(url, server, args.w4)))
    finally:
        server.terminate()
        server.wait(60)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\nmachine: {machine}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print_table(figures, previous(mode))
    if args.record:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        entry = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "mode": mode,
            "executors": args.executors,
            "machine": machine,
            "figures": figures,
        }
        with RESULTS.open("a") as results:
            results.write(json.dumps(entry) + "\n")
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
