"""What a test module runs against: the five services as child processes, or a gateway in
the test's own event loop; and how a test drives them (flows, the CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from headrace.api_client import ApiClient
from headrace.broker import free_port, start_embedded_broker
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.flow_log import FlowLog
from headrace.local import SERVICES, LocalStack
from headrace.services.gateway import run_gateway
from headrace.topics.apply import apply_topics

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_START_S = 20.0
GATEWAY_STOP_S = 15.0


@contextlib.contextmanager
def running_stack(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    logs: str,
    services: Iterable[str] = SERVICES,
    secrets: dict[str, str] | None = None,
    metrics_port: int | None = None,
    **changes: Any,
) -> Iterator[LocalStack]:
    """A started stack on the session's broker and database, its gateway on a free port,
    its service logs in a temporary folder named after `logs`; stopped on exit.
    `services` may name a service more than once (several processes of it). `secrets`:
    the workers' `HEADRACE_SECRET_*` values, by variable name. `metrics_port`: 0 gives
    every service but the gateway a metrics port of its own (LocalStack.metrics_port)."""
    asyncio.run(migrate_url(settings.database_url))
    stack = LocalStack(
        dataclasses.replace(settings, gateway_port=free_port(), **changes),
        log_dir=tmp_path_factory.mktemp(logs),
        secrets=secrets or {},
        metrics_port=metrics_port,
    )
    try:
        stack.start(services)
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def running_stack_on_own_broker(
    settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    logs: str,
    services: Iterable[str] = SERVICES,
    **changes: Any,
) -> Iterator[LocalStack]:
    """`running_stack` on an embedded broker of its own (topics applied), stopped on exit.

    For modules whose consumer groups see members come and go (several schedulers,
    processes killed): on the embedded broker such a group can stay wedged
    (docs/architecture.md), and the next module's services would never join it again."""
    broker = start_embedded_broker()
    try:
        asyncio.run(apply_topics(broker.bootstrap, settings.partitions))
        with running_stack(
            settings, tmp_path_factory, logs, services, kafka_bootstrap=broker.bootstrap, **changes
        ) as stack:
            yield stack
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def in_process_gateway(settings: Settings) -> AsyncIterator[str]:
    """A gateway running in this event loop, on a free port: its base URL."""
    stop = asyncio.Event()
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_gateway(settings, stop, ready=port.set_result))
    await asyncio.wait_for(asyncio.shield(port), GATEWAY_START_S)
    try:
        yield f"http://{settings.gateway_host}:{port.result()}"
    finally:
        stop.set()
        await asyncio.wait_for(task, GATEWAY_STOP_S)


def put_flows(api: ApiClient, namespace: str, sources: dict[str, str]) -> None:
    """Create or update each flow (id -> YAML source) of `namespace`."""
    for flow_id, source in sources.items():
        api.request(
            "PUT",
            f"/flows/{namespace}/{flow_id}",
            body=source.encode(),
            content_type="application/x-yaml",
        )


def run_cli(
    stack: LocalStack, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`headrace ARGS…` as a user runs it against `stack`, from the repository's root."""
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        cwd=ROOT,
        env={**os.environ, "HEADRACE_URL": stack.url},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


async def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """A topic of its own for one test: its name."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


@contextlib.asynccontextmanager
async def reading_flows(settings: Settings, client_id: str) -> AsyncIterator[FlowLog]:
    """A started reader of the `flows` topic (a gateway's, a late one's), stopped after."""
    flow_log = FlowLog(settings, client_id)
    await flow_log.start()
    try:
        yield flow_log
    finally:
        await flow_log.stop()
