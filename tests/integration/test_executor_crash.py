"""kill -9 of the executor loses no execution: after each kill every execution still ends.

Executions are started in bursts straight on the `triggers` topic, the executor is killed
while they run (or while they wait, paused), a new one is started, and every execution must
reach a terminal state. The short form runs in every test run; the long form (1,000
executions, five kills in a row, as the crash-safety issue asked) is marked `long`:
`python -m pytest -m long tests/integration/test_executor_crash.py`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from headrace.api_client import ApiClient
from headrace.client import TriggerClient
from headrace.config import Settings
from headrace.local import LocalStack
from tests.integration.stacks import put_flows, running_stack
from tests.integration.waiting import wait_until

NAMESPACE = "tests.executor-crash"
CHAIN = f"""\
id: chain
namespace: {NAMESPACE}
tasks:
  - id: one
    type: log
    message: one
  - id: two
    type: log
    message: two
  - id: three
    type: log
    message: three
"""
PAUSED = f"""\
id: paused
namespace: {NAMESPACE}
tasks:
  - id: wait
    type: flow.pause
  - id: after
    type: log
    message: resumed
"""
ITEMS = 120
EACH = f"""\
id: each
namespace: {NAMESPACE}
tasks:
  - id: items
    type: flow.foreach
    values: "{{{{ range({ITEMS}) | list }}}}"
    concurrencyLimit: 4
    tasks:
      - id: item
        type: shell
        commands: ["sleep 0.05"]
"""
NOT_ENDED = "CREATED,QUEUED,RUNNING,PAUSED,RETRYING,KILLING"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(settings, tmp_path_factory, "executor-crash-logs") as stack:
        yield stack


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> ApiClient:
    api = ApiClient(stack.url, timeout_s=60)
    put_flows(api, NAMESPACE, {"chain": CHAIN, "paused": PAUSED, "each": EACH})
    return api


def start_many(settings: Settings, api: ApiClient, flow_id: str, count: int) -> list[str]:
    revision = api.request("GET", f"/flows/{NAMESPACE}/{flow_id}")["revision"]

    async def publish() -> list[str]:
        async with TriggerClient(settings.kafka_bootstrap) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.trigger(NAMESPACE, flow_id, {}, revision=revision)
                        for _ in range(count)
                    )
                )
            )

    return asyncio.run(publish())


def count(api: ApiClient, flow_id: str, states: str | None = None) -> int:
    params = {"namespace": NAMESPACE, "flowId": flow_id, "state": states, "size": 1}
    return api.request("GET", "/executions", params=params)["total"]


def restart_executor(stack: LocalStack) -> None:
    (executor,) = [p for p in stack.processes if p.name == "executor" and p.alive]
    executor.process.send_signal(signal.SIGKILL)
    executor.process.wait(10)
    stack.restart(executor)
    stack.wait_ready()


def kill_during_bursts(
    stack: LocalStack, settings: Settings, api: ApiClient, *, executions: int, kills: int
) -> None:
    for round_ in range(kills):
        before = count(api, "chain")
        start_many(settings, api, "chain", executions)
        # Kill once a part has ended: some executions done, many in flight.
        wait_until(
            lambda before=before: (
                count(api, "chain") - before >= executions // 10
                and count(api, "chain", "SUCCESS") - before >= executions // 10
            ),
            timeout_s=120,
            what="a tenth of the burst indexed and ended",
        )
        restart_executor(stack)
        wait_until(
            lambda before=before: (
                count(api, "chain") == before + executions and count(api, "chain", NOT_ENDED) == 0
            ),
            timeout_s=180,
            what=f"every execution of burst {round_ + 1} ended "
            f"({count(api, 'chain', NOT_ENDED)} not ended)",
        )
    total = executions * kills
    assert count(api, "chain", "SUCCESS") >= total  # earlier tests' runs may add to it


def test_no_execution_is_lost_when_the_executor_is_killed_mid_burst(
    stack: LocalStack, settings: Settings, api: ApiClient
) -> None:
    kill_during_bursts(stack, settings, api, executions=300, kills=2)


@pytest.mark.long
def test_five_kills_during_bursts_of_a_thousand(
    stack: LocalStack, settings: Settings, api: ApiClient
) -> None:
    kill_during_bursts(stack, settings, api, executions=1_000, kills=5)


def test_paused_executions_survive_a_kill_of_an_idle_executor(
    stack: LocalStack, settings: Settings, api: ApiClient
) -> None:
    ids = start_many(settings, api, "paused", 120)
    wait_until(lambda: count(api, "paused", "PAUSED") == 120, timeout_s=120, what="all paused")
    restart_executor(stack)
    for execution_id in ids:
        api.request("POST", f"/executions/{execution_id}/resume", json_body={})
    wait_until(
        lambda: count(api, "paused", "SUCCESS") == 120,
        timeout_s=120,
        what=f"all resumed ({count(api, 'paused', 'PAUSED')} still paused)",
    )


def test_big_executions_survive_a_kill_in_the_middle_of_their_items(
    stack: LocalStack, settings: Settings, api: ApiClient
) -> None:
    """Stored as a header and a record per task run, kept decoded between batches: after
    the kill, the new executor reads them from disk and every item runs to its end once."""
    ids = start_many(settings, api, "each", 3)

    def items_done() -> int:
        """Items ended in the execution that ran the fewest (0 until all are indexed)."""
        found = api.request("GET", "/executions", params={"namespace": NAMESPACE, "flowId": "each"})
        runs = {e["id"]: e for e in found["results"]}
        if not set(ids) <= set(runs):
            return 0
        details = [api.request("GET", f"/executions/{i}")["taskRunList"] for i in ids]
        return min(sum(r["state"]["current"] == "SUCCESS" for r in rs) for rs in details)

    wait_until(lambda: items_done() >= 20, timeout_s=120, what="a sixth of the items ran")
    assert items_done() < ITEMS  # caught in the middle
    restart_executor(stack)
    wait_until(
        lambda: count(api, "each", "SUCCESS") >= 3 and count(api, "each", NOT_ENDED) == 0,
        timeout_s=180,
        what=f"the for-each executions ended ({count(api, 'each', NOT_ENDED)} not ended)",
    )
    for execution_id in ids:
        execution = api.request("GET", f"/executions/{execution_id}")
        assert execution["state"]["current"] == "SUCCESS"
        items = [r for r in execution["taskRunList"] if r["taskId"] == "item"]
        assert sorted(int(r["value"]) for r in items) == list(range(ITEMS))
        assert all(r["state"]["current"] == "SUCCESS" for r in items)
